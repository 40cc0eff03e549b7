# The two set-up commands of the README: `make test` and `make demo`. Both create .venv on a
# fresh machine; the pinned CPU torch goes in first so that nothing pulls a CUDA build.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
# Reinstall when pyproject.toml changes.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: help venv test test-fast contracts lint typecheck demo bench crds images locks clean

help:
	@echo "make test   set up .venv and run the test suite"
	@echo "make test-fast  unit and in-process tests only (-m 'not slow and not e2e'), under a minute"
	@echo "make contracts  check the layer contracts ([tool.importlinter] in pyproject.toml)"
	@echo "make typecheck  mypy --strict on the product packages ([tool.mypy] in pyproject.toml)"
	@echo "make demo   set up .venv and run the product's main flow locally"
	@echo "make bench  our inference server side by side with transformers serve (BENCH_ARGS=...)"
	@echo "make crds   regenerate crds/ (and the charts' copies) from the API models"
	@echo "make images build the operator, inference, tuning and preset images (Docker)"
	@echo "make locks  regenerate the hash-pinned lock files of the images (needs uv, PyPI)"

# Debian packages the tests run for real: an OCI registry on loopback.
SYSTEM_DEPS := /usr/bin/docker-registry

$(SYSTEM_DEPS):
	@command -v apt-get >/dev/null || { echo "install Debian's docker-registry"; exit 1; }
	apt-get update -qq && apt-get install -y -qq docker-registry >/dev/null

$(STAMP): pyproject.toml | $(SYSTEM_DEPS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check kaito_operator kaito_egress kaito_workload kaito_sandbox inference_server tuning_job \
		tests benchmarks setup.py

test: $(STAMP) lint typecheck contracts
	$(PY) -m pytest $(PYTEST_ARGS)

# The quick loop while working: what needs no server process, operator, emulator or model.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not e2e" $(PYTEST_ARGS)

# The packages and flags are in [tool.mypy] of pyproject.toml; the cache is .mypy_cache.
typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Which package may import which: [tool.importlinter] in pyproject.toml.
contracts: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache

demo: $(STAMP)
	$(PY) -m kaito_sandbox.demo

# benchmarks/inference_throughput.py --help lists BENCH_ARGS; the `bench` extra adds the peer.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/inference_throughput.py $(BENCH_ARGS)

# The workspace chart carries the Workspace and Machine CRDs (crds/: installed once, never
# deleted); the gpu-provisioner chart the Machine CRD (crds/) and the NodeClaim CRD as a file its
# template installs unless Karpenter (or another release) owns it (crds.nodeClaim.install).
crds: $(STAMP)
	$(PY) -m kaito_operator.api.crd --write crds/
	$(PY) -m kaito_operator.api.crd --write charts/kaito-workspace/crds/ \
		--only kaito.sh_workspaces.yaml --only karpenter.sh_machines.yaml
	cp crds/karpenter.sh_machines.yaml charts/gpu-provisioner/crds/
	mkdir -p charts/gpu-provisioner/files
	cp crds/karpenter.sh_nodeclaims.yaml charts/gpu-provisioner/files/

# Images (needs a Docker engine with BuildKit; not available on the development machines).
REGISTRY ?= localhost:5000
TAG      ?= 0.1.0
PRESET   ?= phi-3-mini-4k-instruct

images:
	docker build -f Dockerfile.operator -t $(REGISTRY)/kaito-operator:$(TAG) .
	docker build -f Dockerfile.inference --target base -t $(REGISTRY)/kaito-base:$(TAG) .
	docker build -f Dockerfile.inference --target tuning -t $(REGISTRY)/kaito-tuning:$(TAG) .
	docker build -f Dockerfile.inference --target preset --build-arg PRESET=$(PRESET) \
		-t $(REGISTRY)/kaito-$(PRESET):$(TAG) .

# The images install from these hash-pinned locks (locks/update.sh says how they are made).
locks:
	UV=$${UV:-uv} sh locks/update.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
