# Warrant — `make help` lists the targets. Every target sets up .venv on its own.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
export WARRANT_DATA_DIR ?= $(CURDIR)/var

.DEFAULT_GOAL := help
.PHONY: help setup run test lint typecheck unit bench soak clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

setup: $(STAMP) ## create .venv and install Warrant with its pinned dependencies

run: $(STAMP) ## run Warrant on embedded defaults (SQLite, keys under ./var, dev mode)
	WARRANT_DEV=1 $(BIN)/warrant demo

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy --strict over every package, tests and benchmarks
	$(BIN)/mypy

# Most tests wait on real servers and subprocesses, so more workers than CPUs pay off; each test
# file runs whole on one worker (its module-scoped servers are started once).
TEST_WORKERS ?= 3

unit: $(STAMP) ## the test suite alone (TEST_WORKERS=3 parallel workers; 0 runs it serially)
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: lint typecheck unit ## lint, type checks and the whole test suite (what CI runs)

bench: $(STAMP) ## benchmarks: ratios against baselines measured in the same run
	$(BIN)/python -m bench

soak: $(STAMP) ## 10 minutes of mixed load with key rotations every minute (not in CI)
	$(BIN)/python -m bench.soak --minutes 10 --rotate-every 60

clean: ## remove the venv, local data and caches
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .coverage
