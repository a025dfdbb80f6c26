"""Shared fixtures.

End-to-end tests (tests/test_cli_train.py, tests/test_train_checkpoint.py) run the real `autolfads` command in a
subprocess, on a tiny synthetic Lorenz set and a tiny model, so a whole training run takes about a second.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# `autolfads data lorenz` arguments of the tiny set: 8 conditions x 5 trials (32 train / 8 valid), 20 bins, 10 neurons.
TINY_DATA_ARGS = ["--n-conditions", "8", "--trials-per-condition", "5", "--seq-len", "20", "--n-neurons", "10"]
TINY_DATA_SHAPE = {"n_train": 32, "n_valid": 8, "seq_len": 20, "n_neurons": 10}

# Trailing KEY VALUE overrides of `autolfads train` for a tiny model: about 40 ms per epoch on one core.
TINY_MODEL = {
    "model.ic_enc_dim": 8,
    "model.ci_enc_dim": 8,
    "model.con_dim": 8,
    "model.co_dim": 1,
    "model.ic_dim": 8,
    "model.gen_dim": 16,
    "model.fac_dim": 4,
    "train.batch_size": 16,
    "train.lr_init": 0.004,
    "train.max_epochs": 3,
    "train.kl_increase_epoch": 1,
    "train.l2_increase_epoch": 1,
    "train.num_samples": 5,
    "train.device": "cpu",
}


def tiny_overrides(**changes: object) -> list[str]:
    """TINY_MODEL as a flat KEY VALUE list; keyword `train__max_epochs=5` replaces `train.max_epochs`."""
    values = {**TINY_MODEL, **{key.replace("__", "."): value for key, value in changes.items()}}
    return [str(item) for pair in values.items() for item in pair]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def cli_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "autolfads.cli", *map(str, args)]


def run_cli(*args: object, timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `autolfads ARGS...` to completion; stdout and stderr captured as text."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, env=cli_env(), timeout=timeout, cwd=cwd)


@pytest.fixture(scope="session")
def autolfads() -> Callable[..., subprocess.CompletedProcess]:
    """`autolfads(*args)` runs the command line in a subprocess (OMP_NUM_THREADS=1) and returns the CompletedProcess."""
    return run_cli


@pytest.fixture(scope="session")
def tiny_model() -> Callable[..., list[str]]:
    """`tiny_model(train__max_epochs=5)`: KEY VALUE override items for a tiny model."""
    return tiny_overrides


@pytest.fixture(scope="session")
def lorenz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Lorenz data set written by `autolfads data lorenz` (shared: never modify it)."""
    path = tmp_path_factory.mktemp("data") / "lorenz.h5"
    result = run_cli("data", "lorenz", "--out", path, *TINY_DATA_ARGS)
    assert result.returncode == 0, result.stderr
    assert path.is_file()
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    """Small recurrent models run fastest (and deterministically) on one thread; see platform notes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
