# Two commands for a fresh machine with only python3: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# The suite mostly waits on real brokers, servers and time windows: three workers share the two
# cores well (about 3.5 min instead of 8). PYTEST_WORKERS=0 runs it in one process. Work
# stealing: an idle worker takes tests queued on a busy one, so the long Kafka fault tests do
# not end up in one worker's tail (6 min 44 s with xdist's default scheduling, 3 min 23 s).
PYTEST_WORKERS ?= 3

.PHONY: run test test-fast lint bench browser screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/leadrelay serve

# The console's browser tests drive Debian's Chromium through Playwright (nothing downloaded
# at test time). Installed here when missing and we are root (CI); otherwise stop and say so.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else \
	    echo "make browser: $(CHROMIUM) is missing; install Debian's chromium package (apt-get install chromium) as root" >&2; exit 1; \
	  fi; \
	fi

test: $(VENV)/.installed-test browser
	$(BIN)/ruff check service consumers handlers tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The inner loop: everything but the Kafka, deploy, browser and slow tests (markers in pyproject.toml).
FAST_MARKERS := not (kafka or deploy or browser or slow)
test-fast: $(VENV)/.installed-test
	$(BIN)/ruff check service consumers handlers tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

# Ingest ratios (wrk when installed: `apt-get install wrk`) and end-to-end latency, both modes.
bench: $(VENV)/.installed-test
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/latency.py

# PNGs of every console page for docs/console.md (a demo dataset, the LeadSquared simulator).
screenshots: $(VENV)/.installed-test browser
	$(BIN)/python docs/console_screenshots.py

clean:
	rm -rf $(VENV) var .pytest_cache
