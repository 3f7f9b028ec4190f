# Two commands do all the set-up on a fresh machine:
#   make demo   # fine-tune the embedded model on the sample data, before/after table + report
#   make test   # lint, format check and the test suite
# Both create .venv when no virtual environment is active and install what is needed
# (scripts/ensure_env.sh prints the Python to use).
ENSURE = scripts/ensure_env.sh

.PHONY: demo test lint env browser

env:
	@$(ENSURE) >/dev/null

demo:
	@py=$$($(ENSURE)) && $$py -m workbench demo $(ARGS)

lint:
	@py=$$($(ENSURE)) && $$py -m ruff check . && $$py -m ruff format --check .

# In CI (CI=true, as root) the browser test's Chromium comes from Debian's packages; elsewhere
# that test is skipped, with the reason, when no chromium is installed.
browser:
	@if [ "$${CI:-}" = "true" ] && ! command -v chromium >/dev/null 2>&1; then \
		apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; \
	fi

test: lint browser
	@py=$$($(ENSURE)) && $$py -m pytest -q -ra $(ARGS)
