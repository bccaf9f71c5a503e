# The two quick-start commands live here: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# One node, every role, embedded bus and store, data in ./var. Ctrl-C stops it.
run: setup
	$(BIN)/mirliton start

# Installs and starts what the tests need (SIPp, promtool, RabbitMQ, a CouchDB-API server),
# then runs every test.
test: setup
	bash tests/services/setup.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy mirliton actors supervisors bus store protocols

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
