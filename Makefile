# Two commands for a fresh machine with only python3: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test lint bench clean

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

test: $(VENV)/.installed-test
	$(BIN)/ruff check service consumers handlers tests bench
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Ingest ratios (wrk when installed: `apt-get install wrk`) and end-to-end latency, both modes.
bench: $(VENV)/.installed-test
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/latency.py

clean:
	rm -rf $(VENV) var .pytest_cache
