# fusionrec — the two commands a new user needs: `make run` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
REPLAY ?=
FORMAT ?= sessionrec
MODEL ?= fusion
PYTEST_ARGS ?=

.PHONY: install run test lint bench-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## run: set up and run the whole platform embedded (broker, flow, API, live shop); Ctrl-C stops it
run: install
	$(BIN)/fusionrec run --model $(MODEL) $(if $(REPLAY),--replay $(REPLAY) --format $(FORMAT),)

## test: set up and run the test suite
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

## bench-deps: the peers the benchmarks compare against (pycleora, gensim, implicit)
bench-deps: install
	$(BIN)/pip install -q -e '.[dev,bench]'

clean:
	rm -rf var .pytest_cache
