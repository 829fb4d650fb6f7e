PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-all lint ui psql clean bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,deploy]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/flowretail run

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest

# the commands a user runs, timed on the embedded PostgreSQL 18 and the machine's PostgreSQL 15 (see BENCHMARKS.md)
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/command.py

psql: $(STAMP)
	$(BIN)/flowretail psql

ui: $(STAMP)
	$(BIN)/flowretail ui

lint: $(STAMP)
	$(BIN)/ruff check pipelines tests benchmarks
	$(BIN)/ruff format --check pipelines tests benchmarks
	$(BIN)/mypy pipelines

clean:
	rm -rf $(VENV) .venv-dbt .flowretail
