# tagserve: `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
# The project's own uv, never one from PATH: the version uv.lock pins, bootstrapped with pip
# into .tools/ (a fresh machine has only python + pip). `uv sync` then installs the same uv into
# .venv/bin, where bentoml build and `python -m release` find it (docs/getting-started.md: set-up notes).
UV_VERSION := $(shell awk -F'"' '/^name = "uv"$$/ {getline; print $$2; exit}' uv.lock)
UV := $(CURDIR)/.tools/bin/uv
UV_STAMP := .tools/uv-$(UV_VERSION)
RUN := $(UV) run --frozen
VENV := .venv
PART ?= patch
# make serve / make release: the prod model unless MODEL names another (ALLOW_NON_PROD=1).
MODEL ?=
ALLOW_NON_PROD ?=
PORT ?= 3000
HOST ?= 0.0.0.0
BENCH_ARGS ?=
# MLServer, the benchmarks' V2 peer, in a virtualenv of its own (it pins its own fastapi).
MLSERVER_VENV ?= .tools/mlserver-venv
# apt-get needs root: sudo when make runs as another user.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: help install spark demo models release cut-release serve container manifests rehearse bench bench-load hey test test-fast docs lint format lock clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(UV_STAMP):
	@test -n "$(UV_VERSION)" || { echo "error: uv.lock pins no uv version" >&2; exit 1; }
	@echo "install: bootstrapping uv $(UV_VERSION) into .tools/ (pip)" >&2
	rm -rf .tools
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --progress-bar on uv==$(UV_VERSION)
	touch $@

# --compile-bytecode: write the .pyc files once here (uv does not by default, and with
# PYTHONDONTWRITEBYTECODE Python never does): every command would otherwise compile scikit-learn,
# skops, pandas... from source at start-up.
# --inexact: add what uv.lock's default groups need and remove nothing, so that the spark group
# `make spark` added stays (an exact sync would uninstall it before every `make test`).
# No --quiet: on a real network this is the long step of `make demo`, so uv shows its progress
# (on stderr, with the step lines: a target's output stays its own, e.g. `make models`).
install: $(UV_STAMP) ## Create .venv with the locked dependencies (uv.lock), showing progress
	@echo "install: .venv from uv.lock (default groups: dev, docs; \`make spark\` adds pyspark)" >&2
	@$(UV) sync --frozen --inexact --compile-bytecode

# pyspark is large and only the Spark job (python -m clients spark) needs it: a group of its own.
spark: install ## Add pyspark to .venv (the Spark job's own dependency group; make test runs it)
	@echo "spark: adding the spark dependency group (pyspark) to .venv" >&2
	@$(UV) sync --frozen --inexact --compile-bytecode --group spark

demo: install ## Pipeline end to end (offline), import the prod model, build the bento
	$(RUN) python -m pipeline
	$(RUN) python -m importers
	$(RUN) python -m release dev

models: install ## List the store's models: exact tag, stage, artifact and lineage
	@$(RUN) python -m release models

release: install ## Bento of the prod model, versioned by the git release tag at HEAD (X.Y.Z or vX.Y.Z)
	$(RUN) python -m release build $(if $(MODEL),--model $(MODEL)) $(if $(ALLOW_NON_PROD),--allow-non-prod)

cut-release: install ## Tag the next release: make cut-release PART=major|minor|patch
	$(RUN) python -m release cut $(PART)

serve: install ## Serve the prod model from this checkout (MODEL=tag ALLOW_NON_PROD=1 for another; HOST, PORT)
	@model=$$($(RUN) python -m release model $(MODEL) $(if $(ALLOW_NON_PROD),--allow-non-prod)) \
		&& echo "serving $$model" \
		&& TAGSERVE_MODEL=$$model $(RUN) bentoml serve service:Tagserve --host $(HOST) --port $(PORT)

container: install ## OCI image of a bento with buildah (BENTO=name:version, default newest), run and call it
	PYTHON=.venv/bin/python BENTOML=.venv/bin/bentoml scripts/container.sh $(BENTO)

# make manifests: IMAGE must carry a release tag (registry/tagserve:v1.2.3).
IMAGE ?=
REHEARSE_ARGS ?=
manifests: install ## Kubernetes manifests of one model as one YAML stream: make manifests MODEL=tag IMAGE=image:X.Y.Z
	@$(RUN) python -m deploy.kubernetes --model "$(MODEL)" --image "$(IMAGE)"

haproxy: # The rehearsal's load balancer (Debian's haproxy), installed when missing
	@command -v haproxy >/dev/null || { \
	  echo "rehearse: haproxy is missing: installing the Debian package haproxy (apt-get)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq haproxy >/dev/null \
	  || { echo "error: could not install haproxy: run apt-get install -y haproxy as root" >&2; exit 1; }; }

rehearse: install haproxy ## As root: rolling upgrade + lost replica on network-namespace hosts behind HAProxy -> benchmarks/results/rehearsal.* (REHEARSE_ARGS=--quick)
	$(RUN) python -m rehearsal $(REHEARSE_ARGS)

hey: # The compiled load generator of the benchmarks (Debian's hey), installed when missing
	@command -v hey >/dev/null || { \
	  echo "bench: the load generator hey is missing: installing the Debian package hey (apt-get)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq hey >/dev/null \
	  || { echo "error: could not install hey: run apt-get install -y hey as root" >&2; exit 1; }; }

$(MLSERVER_VENV)/requirements.txt: benchmarks/mlserver/requirements.txt
	rm -rf $(MLSERVER_VENV)
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/pip install --quiet -r $<
	cp $< $@

bench: install hey $(MLSERVER_VENV)/requirements.txt ## Serving benchmark on the prod model (after make demo) -> benchmarks/results/ (BENCH_ARGS=--quick)
	$(RUN) python -m benchmarks.serving $(BENCH_ARGS)
	$(RUN) python -m benchmarks.workers $(BENCH_ARGS)
	$(RUN) python -m benchmarks.forest $(BENCH_ARGS)
	$(RUN) python -m benchmarks.shadow $(BENCH_ARGS)
	$(RUN) python -m benchmarks.monitoring $(BENCH_ARGS)
	$(RUN) python -m benchmarks.v2 --mlserver-python $(MLSERVER_VENV)/bin/python $(BENCH_ARGS)

bench-load: install hey ## /predict under 400 clients (hey), with and without load shedding -> benchmarks/results/load.*
	$(RUN) python -m benchmarks.load $(LOAD_ARGS)

test: spark ## Run the test suite (all of it; the docs' strict build included)
	$(RUN) pytest

# Left out: the tests marked `server` (they start bentoml serve, Spark, buildah, chromium,
# Prometheus or hey: tests/helpers/marks.py) and `slow` (the whole pipeline in subprocesses).
test-fast: install ## The tests that start no server, JVM, container, browser, Prometheus or hey
	$(RUN) pytest -m "not server and not slow" -n 2

docs: install ## Build the docs site strictly into site/ (a broken link or anchor fails)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

lint: install ## Check style with ruff (lint + format)
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: install ## Format the code with ruff
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

lock: $(UV_STAMP) ## Refresh uv.lock and the MLflow project's pipeline/requirements.txt
	$(UV) lock
	$(UV) export --no-hashes --no-default-groups --no-emit-project --frozen --quiet -o pipeline/requirements.txt

clean: ## Remove local runs, stores and caches (.tagserve/, site/, caches)
	rm -rf .tagserve site .pytest_cache .ruff_cache
