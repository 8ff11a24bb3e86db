# tagserve: `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
# The project's own uv, never one from PATH: the version uv.lock pins, bootstrapped with pip
# into .tools/ (a fresh machine has only python + pip). `uv sync` then installs the same uv into
# .venv/bin, where bentoml build and `python -m release` find it (README: set-up notes).
UV_VERSION := $(shell awk -F'"' '/^name = "uv"$$/ {getline; print $$2; exit}' uv.lock)
UV := $(CURDIR)/.tools/bin/uv
UV_STAMP := .tools/uv-$(UV_VERSION)
RUN := $(UV) run --frozen
PART ?= patch
# make serve / make release: the prod model unless MODEL names another (ALLOW_NON_PROD=1).
MODEL ?=
ALLOW_NON_PROD ?=
PORT ?= 3000
HOST ?= 0.0.0.0
BENCH_ARGS ?=
# apt-get needs root: sudo when make runs as another user.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: help install demo release cut-release serve container manifests rehearse bench bench-load hey test lint format lock clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(UV_STAMP):
	@test -n "$(UV_VERSION)" || { echo "error: uv.lock pins no uv version" >&2; exit 1; }
	rm -rf .tools
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)
	touch $@

# --compile-bytecode: write the .pyc files once here (uv does not by default, and with
# PYTHONDONTWRITEBYTECODE Python never does): every command would otherwise compile scikit-learn,
# skops, pandas... from source at start-up, ~3.5 s of a 9 s `clients score`.
install: $(UV_STAMP) ## Create .venv with the locked dependencies (uv.lock)
	$(UV) sync --frozen --quiet --compile-bytecode

demo: install ## Pipeline end to end (offline), import the prod model, build the bento
	$(RUN) python -m pipeline
	$(RUN) python -m importers
	$(RUN) python -m release dev

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

bench: install hey ## Serving benchmark on the prod model (after make demo) -> benchmarks/results/ (BENCH_ARGS=--quick)
	$(RUN) python -m benchmarks.serving $(BENCH_ARGS)
	$(RUN) python -m benchmarks.workers $(BENCH_ARGS)
	$(RUN) python -m benchmarks.forest $(BENCH_ARGS)
	$(RUN) python -m benchmarks.shadow $(BENCH_ARGS)
	$(RUN) python -m benchmarks.monitoring $(BENCH_ARGS)

bench-load: install hey ## /predict under 400 clients (hey), with and without load shedding -> benchmarks/results/load.*
	$(RUN) python -m benchmarks.load $(LOAD_ARGS)

test: install ## Run the test suite
	$(RUN) pytest

lint: install ## Check style with ruff (lint + format)
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: install ## Format the code with ruff
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

lock: $(UV_STAMP) ## Refresh uv.lock and the MLflow project's pipeline/requirements.txt
	$(UV) lock
	$(UV) export --no-hashes --no-dev --no-emit-project --frozen --quiet -o pipeline/requirements.txt

clean: ## Remove local runs, stores and caches (.tagserve/, caches)
	rm -rf .tagserve .pytest_cache .ruff_cache
