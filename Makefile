# Quick start: `make run` serves the bridge on the built-in config (SQLite, console);
# `make test` runs the linters, the type checker and the whole test suite; `make test-fast`
# the linters and the unit and static tests only (seconds: no database server, no process).
# Both create .venv and install the pinned dependencies first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast lint install bench catalogs clean

$(BIN)/smsbridge: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/smsbridge

run: install
	$(BIN)/smsbridge serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

test-fast: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q tests/unit tests/static

# After changing a word the bridge writes into chat: re-extract the template and merge it
# into the Dutch and French catalogs, then translate what is new or marked fuzzy
# (tests/static/test_catalogs.py fails until every message has both).
catalogs: install
	$(BIN)/pybabel extract -F babel.cfg -k Phrase --no-location --sort-output --no-wrap \
		--project=smstools-bridge -o bridge/locale/bridge.pot .
	$(BIN)/pybabel update -D bridge -i bridge/locale/bridge.pot -d bridge/locale \
		--no-wrap --ignore-obsolete

bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) smsbridge.db smsbridge.db-wal smsbridge.db-shm
