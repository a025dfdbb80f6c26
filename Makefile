# Two commands on a fresh machine:  `make demo` (an AutoLFADS search on synthetic Lorenz data)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# These machines carry the CPU wheel of torch 2.13.0 on disk. With a GPU: make setup TORCH=torch
TORCH ?= torch==2.13.0
DEMO ?= runs/demo

.PHONY: setup demo test test-fast bench clean

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

bench: setup
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/lorenz_quality.py
	$(BIN)/python benchmarks/pbt_lorenz.py

clean:
	rm -rf $(VENV) runs .pytest_cache
