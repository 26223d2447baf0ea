# clflow: `make run` runs the default pipeline, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Quiet and offline: no telemetry, a project-local Prefect home.
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_HOME := $(CURDIR)/.prefect
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PREFECT_LOGGING_LEVEL ?= WARNING
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install run test bench clean help

help:  ## list targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

install: $(STAMP)  ## create .venv and install the pinned project

.dvc/config:
	@git rev-parse --git-dir >/dev/null 2>&1 || git init -q
	$(BIN)/dvc init -q

run: install .dvc/config  ## run the whole default pipeline through the Prefect flow
	$(BIN)/python flows/pipeline.py

test: install  ## run the test suite
	$(BIN)/python -m pytest tests

bench: install  ## run the benchmarks (prints tables)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:  ## remove generated state (keeps .venv)
	rm -rf mlflow.db mlruns .prefect metrics plots models data/stream
