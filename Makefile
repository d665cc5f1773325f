# Two commands set everything up on a fresh machine:
#   make demo   installs inboxcrm in .venv and runs the demo on embedded defaults
#   make test   installs the test dependencies in .venv and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[postgresql,test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/inboxcrm demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python bench/import_bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info
