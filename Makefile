# Two commands do all the set-up on a fresh machine:
#   make demo   # fine-tune the embedded model on the sample data, before/after table + report
#   make test   # lint, format check and the test suite (every tier; what CI runs)
# Both create .venv when no virtual environment is active and install what is needed
# (scripts/ensure_env.sh prints the Python to use). While editing, `make test-fast` runs the
# unit tier (no model weights) in about a minute; docs/testing.md lists the tiers.
ENSURE = scripts/ensure_env.sh
# pytest-xdist workers: one per core (tests/conftest.py gives each one torch thread). Tests
# that must run in order share an xdist_group, which --dist loadgroup keeps on one worker.
WORKERS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: demo test test-fast lint env browser screenshots

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

# Two passes at once: the browser tests (one server and one Chromium at a time) and, niced so
# that the browser's kernel is never starved (a page waiting for a kernel timed out when
# training took its core), every other tier on all cores. The browser pass's output follows.
BROWSER_LOG = test-artifacts/browser-pass.log
test: lint browser
	@py=$$($(ENSURE)) || exit 1; mkdir -p test-artifacts; rm -f $(BROWSER_LOG).rc; \
	{ $$py -m pytest -q -ra -m browser -p no:cacheprovider $(ARGS) > $(BROWSER_LOG) 2>&1; \
	  echo $$? > $(BROWSER_LOG).rc; } & \
	nice -n 10 $$py -m pytest -q -ra -n $(WORKERS) --dist loadgroup -m "not browser" $(ARGS); \
	rc=$$?; wait; echo "--- the browser tests ($(BROWSER_LOG))"; cat $(BROWSER_LOG); \
	browser=$$(cat $(BROWSER_LOG).rc); \
	[ $$rc -eq 0 ] && { [ $$browser -eq 0 ] || [ $$browser -eq 5 ]; }  # 5: none selected

test-fast:
	@py=$$($(ENSURE)) && $$py -m pytest -q -ra -m unit -n $(WORKERS) $(ARGS)

# The browser tests again, writing their screenshots of the panels into docs/images/.
screenshots: browser
	@py=$$($(ENSURE)) && WORKBENCH_SCREENSHOTS=docs/images $$py -m pytest -q -ra -m browser $(ARGS)
