# Two commands do all the set-up on a fresh machine:
#   make demo   # fine-tune the embedded model on the sample data, before/after table + report
#   make test   # lint, format check and the test suite
# Both create .venv when no virtual environment is active and install what is needed
# (scripts/ensure_env.sh prints the Python to use).
ENSURE = scripts/ensure_env.sh

.PHONY: demo test lint env

env:
	@$(ENSURE) >/dev/null

demo:
	@py=$$($(ENSURE)) && $$py -m workbench demo $(ARGS)

lint:
	@py=$$($(ENSURE)) && $$py -m ruff check . && $$py -m ruff format --check .

test: lint
	@py=$$($(ENSURE)) && $$py -m pytest -q -ra $(ARGS)
