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
# Prefect's ephemeral API gives up after 20 s; a first start (database migrations) on a busy
# 2-core machine can take longer (measured: a failed `make run` on a fresh .prefect/).
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PREFECT_LOGGING_LEVEL ?= WARNING
# flow and task runs log at INFO to the Prefect API (run pages); the console shows warnings only
export PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL ?= WARNING
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install run test test-fast lint docs bench bench-data bench-drift-peers clean help ui serve serve-model update drift-watch \
	team-up team-down team-status pull worker postgres

PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000
# the Prefect server's address: anything beyond loopback is refused unless team mode gave it an
# auth string (make team-up); serve it to others through a TLS proxy (docs/how-to/team-setup.md)
UI_HOST ?= 127.0.0.1

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# FAISS_EXTRA=gpu installs faiss-gpu instead of faiss-cpu (both provide `faiss`: never both).
FAISS_EXTRA ?= cpu

# uv installs the pins (a minute; pip takes five on 2 cores). It is told pip's configured wheel
# folders (find-links), where a CPU torch lies: without them torch==2.13.0 is PyPI's CUDA build.
# --compile-bytecode as pip does: where PYTHONDONTWRITEBYTECODE is set (these machines), a module
# left uncompiled is compiled again by every process that imports it (the suite took 36 min, not
# 20). Where uv cannot be had, pip installs the same pins.
UV_VERSION := 0.13.10
PIP_FIND_LINKS_CFG = $(shell $(BIN)/pip config get global.find-links 2>/dev/null)
UV_PIP = $(BIN)/uv pip install --quiet --compile-bytecode $(addprefix --find-links ,$(sort $(PIP_FIND_LINKS) $(PIP_FIND_LINKS_CFG)))

$(STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/pip install -q uv==$(UV_VERSION) || echo "install: no uv; pip installs (slower)" >&2
	if [ -x $(BIN)/uv ]; then $(UV_PIP) --python $(BIN)/python -e '.[test,$(FAISS_EXTRA)]'; \
	else $(BIN)/pip install -q -e '.[test,$(FAISS_EXTRA)]'; fi
	@touch $@

# Flower's own environment (federated.engine: flower): flwr's pins conflict with Prefect's and
# DVC's, so its processes run from .venv-flower with the Flower app's pinned dependencies and
# clflow's src/ on PYTHONPATH (clflow itself is not installed there: `pip check` stays clean).
FLOWER_VENV := .venv-flower
FLOWER_APP := src/clflow/federated/flower/app/pyproject.toml
FLOWER_STAMP := $(FLOWER_VENV)/.installed
export CLFLOW_FLOWER_VENV ?= $(CURDIR)/$(FLOWER_VENV)

$(FLOWER_STAMP): $(FLOWER_APP) | $(STAMP)
	$(PYTHON) -m venv $(FLOWER_VENV)
	if [ -x $(BIN)/uv ]; then $(UV_PIP) --python $(FLOWER_VENV)/bin/python -r $(FLOWER_APP); \
	else $(PYTHON) -c "import subprocess, tomllib; \
	deps = tomllib.load(open('$(FLOWER_APP)', 'rb'))['project']['dependencies']; \
	subprocess.run(['$(FLOWER_VENV)/bin/pip', 'install', '-q', *deps], check=True)"; fi
	@touch $@

install: $(STAMP) $(FLOWER_STAMP)  ## create .venv (clflow) and .venv-flower (Flower), pinned

.dvc/config:
	@git rev-parse --git-dir >/dev/null 2>&1 || git init -q
	$(BIN)/dvc init -q

run: install .dvc/config  ## run the whole default pipeline through the Prefect flow
	$(BIN)/python flows/pipeline.py

update: install .dvc/config  ## continual update: take in data/incoming/, update TAME, register the model
	$(BIN)/python flows/continual.py

# `--port` alone leaves the UI calling the API on 4200 (PREFECT_SERVER_API_PORT and
# PREFECT_UI_API_URL say where it is); one MLflow worker and no job runner (4 uvicorn workers and
# 7 huey consumers by default, for GenAI jobs clflow does not use) keep `make ui` light.
ui: install  ## Prefect server and MLflow UI on 127.0.0.1 (Ctrl-C stops both)
	@$(BIN)/python -m clflow.util.services --host $(UI_HOST) $(if $(wildcard $(PREFECT_AUTH_FILE)),--auth) \
		PREFECT_PORT=$(PREFECT_PORT) MLFLOW_PORT=$(MLFLOW_PORT)
	@echo "Prefect UI: http://127.0.0.1:$(PREFECT_PORT)   MLflow UI: http://127.0.0.1:$(MLFLOW_PORT)"
	@CLFLOW_MLFLOW_UI=http://127.0.0.1:$(MLFLOW_PORT) $(BIN)/clflow links || true
	@echo "in another shell: make serve   (schedules the deployments of prefect.yaml)"
	@trap 'kill 0' INT TERM EXIT; \
	PREFECT_SERVER_API_HOST=$(UI_HOST) PREFECT_SERVER_API_PORT=$(PREFECT_PORT) \
	PREFECT_UI_API_URL=http://$(UI_HOST):$(PREFECT_PORT)/api $(SERVER_AUTH) \
	$(BIN)/prefect server start --host $(UI_HOST) --port $(PREFECT_PORT) & \
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --workers 1 \
	--backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT) & \
	wait -n; status=$$?; \
	echo "error: make ui: a server stopped (exit $$status); stopping the other" >&2; exit 1

serve: install .dvc/config  ## serve the deployments of prefect.yaml against the `make ui` server
	$(CLIENT_AUTH) PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PREFECT_PORT)/api} \
	CLFLOW_MLFLOW_UI=$${CLFLOW_MLFLOW_UI:-http://127.0.0.1:$(MLFLOW_PORT)} $(BIN)/python flows/serve.py

MODEL_PORT ?= 5001
serve-model: install  ## serve the champion on 127.0.0.1:$(MODEL_PORT), recording to data/served/
	$(BIN)/clflow serve models:/clflow-tame@champion --port $(MODEL_PORT)

drift-watch: install  ## score the newest window of served traffic once (the drift-watch flow)
	$(BIN)/python flows/drift_watch.py

# Team mode: PostgreSQL 15 (Debian's postgresql-15) and `mlflow server` on it, on loopback, with
# the data in TEAM_DIR (kept by team-down); a DVC remote (TEAM_REMOTE, default TEAM_DIR/dvc-remote;
# s3://bucket/path with TEAM_ENDPOINT for an S3-compatible one). docs/how-to/team-setup.md
TEAM_DIR ?= $(CURDIR)/.team
# team mode (after `make team-up`): the Prefect server of `make ui` requires the team's auth
# string, and `make serve` / `make worker` send it (a value already exported wins)
PREFECT_AUTH_FILE = $(TEAM_DIR)/prefect-auth
SERVER_AUTH = $(if $(wildcard $(PREFECT_AUTH_FILE)),PREFECT_SERVER_API_AUTH_STRING="$$(cat $(PREFECT_AUTH_FILE))")
CLIENT_AUTH = $(if $(wildcard $(PREFECT_AUTH_FILE)),PREFECT_API_AUTH_STRING="$${PREFECT_API_AUTH_STRING:-$$(cat $(PREFECT_AUTH_FILE))}")
TEAM_PG_PORT ?= 5433
TEAM_MLFLOW_PORT ?= 5050
TEAM_REMOTE ?=
TEAM_ENDPOINT ?=
TEAM_ARGS = --dir $(TEAM_DIR) --pg-port $(TEAM_PG_PORT) --mlflow-port $(TEAM_MLFLOW_PORT)

team-up: install .dvc/config postgres  ## PostgreSQL + MLflow server, DVC remote; prints the exports
	$(BIN)/clflow team up $(TEAM_ARGS) $(if $(TEAM_REMOTE),--remote $(TEAM_REMOTE)) \
		$(if $(TEAM_ENDPOINT),--endpoint-url $(TEAM_ENDPOINT))

team-down: install  ## stop the team's MLflow server and PostgreSQL (the data stays in TEAM_DIR)
	$(BIN)/clflow team down $(TEAM_ARGS)

team-status: install  ## is the team's PostgreSQL / MLflow server running?
	$(BIN)/clflow team status $(TEAM_ARGS)

postgres:  # PostgreSQL 15's server programs (Debian's postgresql-15)
	@if [ -x /usr/lib/postgresql/15/bin/initdb ] || command -v initdb >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q postgresql-15 >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q postgresql-15; }; \
	else echo "run: sudo apt-get install postgresql-15"; exit 1; fi

pull: install .dvc/config  ## fetch the outs dvc.lock names from the DVC remote (then nothing retrains)
	$(BIN)/clflow team pull $(if $(TEAM_REMOTE),--remote $(TEAM_REMOTE)) \
		$(if $(TEAM_ENDPOINT),--endpoint-url $(TEAM_ENDPOINT))

# One worker per clone, all on one Prefect server (`make ui`, or PREFECT_API_URL): deploy the
# deployments of prefect.yaml to the `clflow` process pool, then run what it is given, here.
worker: install .dvc/config  ## a `clflow` pool process worker that runs flows in this clone
	@export PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PREFECT_PORT)/api} \
		$(CLIENT_AUTH); \
	$(BIN)/prefect work-pool inspect clflow >/dev/null 2>&1 || \
		$(BIN)/prefect work-pool create clflow --type process >/dev/null && \
	$(BIN)/prefect --no-prompt deploy --all >/dev/null && \
	CLFLOW_WORKSPACE=$(CURDIR) exec $(BIN)/prefect worker start --pool clflow

lint: install  ## ruff (pyproject.toml: lines <= 100, imports sorted, pyflakes, bugbear)
	$(BIN)/ruff check src stages flows tests bench

docs: install  ## regenerate docs/concepts/parameters.md from src/clflow/config.py
	$(BIN)/python -m clflow.ops.paramsdoc docs/concepts/parameters.md

# pytest-xdist workers: much of the suite waits on subprocesses and servers, so two workers pay on
# two cores; tests sharing a costly session fixture stay on one worker (tests/conftest.py, SHARED).
# A third pays nothing: the two keep both cores busy (AMD EPYC, 2 cores: 28 min 22 s with three,
# 26-27 min with two)
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

test: install lint  ## lint, then run the test suite (TEST_WORKERS=2 by default; 0 runs it serially)
	$(BIN)/python -m pytest tests $(XDIST) --durations=30

test-fast: install  ## the tests not marked slow (no pipeline runs, no servers): the edit loop
	$(BIN)/python -m pytest tests -m "not slow" -q $(XDIST)

# alibi-detect, bench/drift.py's named peer: its numpy < 2 pin conflicts with clflow's numpy 2,
# so it gets a venv of its own (as Flower does); bench/peers/alibi_drift.py runs there.
DRIFT_VENV := .venv-drift
DRIFT_STAMP := $(DRIFT_VENV)/.installed

$(DRIFT_STAMP): bench/peers/drift-requirements.txt
	$(PYTHON) -m venv $(DRIFT_VENV)
	$(DRIFT_VENV)/bin/pip install -q -r bench/peers/drift-requirements.txt
	@touch $@

bench-drift-peers: $(DRIFT_STAMP)  ## .venv-drift: alibi-detect for bench/drift.py

bench: install bench-data bench-drift-peers  ## run the benchmarks (prints tables; installs the `bench` extra: river)
	$(BIN)/pip install -q -e '.[bench,$(FAISS_EXTRA)]'
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Fashion-MNIST for bench/scale.py and bench/lingo.py, offline: Debian's dataset-fashion-mnist
# puts its idx files where `stream.source: fashion_mnist` with `stream.path: ""` looks for them.
# Split-Fortunes (bench/lingo.py, a text stream): Debian's fortunes, one category per file.
FASHION_DIR := /usr/share/datasets/fashion-mnist
FORTUNES_DIR := /usr/share/games/fortunes
bench-data: install  ## Fashion-MNIST and Split-Fortunes (data/fortunes) from Debian's packages
	@for pkg in dataset-fashion-mnist:$(FASHION_DIR)/train-images-idx3-ubyte.gz \
		fortunes:$(FORTUNES_DIR)/computers; do \
		name=$${pkg%%:*}; file=$${pkg#*:}; \
		if [ -f $$file ]; then echo "$$name is installed"; \
		elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get install -y -q $$name >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null && apt-get install -y -q $$name; } || exit 1; \
		else echo "run: sudo apt-get install $$name"; exit 1; fi; \
	done
	$(BIN)/python -m clflow.streams.fortunes --out data/fortunes

clean:  ## remove generated state (keeps .venv)
	rm -rf mlflow.db .mlflow.db.*.lock mlruns .prefect .clflow metrics plots models data/stream
