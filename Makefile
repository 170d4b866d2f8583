# Two entry points: `make demo` runs the web demo, `make test` runs the test suite.
# Each creates .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_DEV := $(VENV)/.installed-dev
STAMP_DEMO := $(VENV)/.installed-demo

.PHONY: test demo venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP_DEV): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

$(STAMP_DEMO): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[demo]"
	touch $@

venv: $(STAMP_DEV)

test: $(STAMP_DEV)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP_DEMO)
	$(BIN)/python demos/app.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
