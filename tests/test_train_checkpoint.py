"""Checkpoints: bit-identical round trips, weights_only loading, resume equivalence, and kill -9 at any moment."""

from __future__ import annotations

import csv
import math
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

try:
    from conftest import cli_command, cli_env, tiny_overrides
except ImportError:  # pytest --import-mode=importlib
    from tests.conftest import cli_command, cli_env, tiny_overrides

from autolfads.config import Config, apply_overrides
from autolfads.errors import CheckpointError
from autolfads.train.checkpoint import FORMAT_VERSION, load_checkpoint, remove_stale_temporaries, save_checkpoint
from autolfads.train.run import train


def bits(t: torch.Tensor) -> torch.Tensor:
    """A float tensor's bit pattern as integers, so NaN == NaN and -0.0 != 0.0; other tensors as they are."""
    if t.is_floating_point():
        return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
    return t


def assert_same(a, b, where="payload"):
    """Recursive equality: tensors bit-identical (dtype, shape, values), Python values equal and of the same type."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, (where, a.dtype, b.dtype, a.shape, b.shape)
        assert torch.equal(bits(a), bits(b)), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, (where, a, b)


# --- save / load ----------------------------------------------------------------------------------------------------


def test_round_trip_is_bit_identical(tmp_path):
    g = torch.Generator().manual_seed(0)
    payload = {
        "model": {
            "weight": torch.randn(3, 4, 5, generator=g),
            "double": torch.randn(7, dtype=torch.float64, generator=g),
            "half": torch.randn(4, generator=g).half(),
            "bfloat": torch.randn(4, generator=g).bfloat16(),
            "ints": torch.randint(-(2**40), 2**40, (6,), generator=g),
            "mask": torch.rand(5, generator=g) > 0.5,
            "scalar": torch.tensor(3.25),
            "empty": torch.zeros(0, 3),
            "special": torch.tensor([math.nan, math.inf, -math.inf, -0.0, 1e-45]),
            "strided": torch.randn(6, 4, generator=g).t(),  # non-contiguous
        },
        "rng": {"generator": g.get_state()},
        "trainer": {"epoch": 17, "lr": 0.0031, "best": math.inf, "smth": math.nan, "stopped": False, "name": "m0"},
        "history": [{"epoch": 0, "loss": 1.5}, {"epoch": 1, "loss": 1.25}],
        "config": {"model": {"gen_dim": 16, "data_dim": None}, "train": {"device": "cpu"}},
        "shape": (3, 4),
    }
    path = tmp_path / "nested" / "last.ckpt"
    save_checkpoint(payload, path)
    loaded = load_checkpoint(path)
    assert loaded.pop("format_version") == FORMAT_VERSION
    assert_same(loaded, payload)
    assert torch.isnan(loaded["model"]["special"][0]) and str(loaded["model"]["special"][3].item()) == "-0.0"
    assert not [p for p in path.parent.iterdir() if p.name != "last.ckpt"], "temporary files left behind"
    # saving again replaces the file whole
    save_checkpoint({"epoch": 18}, path)
    assert load_checkpoint(path) == {"format_version": FORMAT_VERSION, "epoch": 18}


def test_round_trip_of_a_real_training_state(tmp_path, lorenz_file):
    config = tiny_config(max_epochs=2)
    train(config, lorenz_file, tmp_path / "run", echo=None)
    first = load_checkpoint(tmp_path / "run" / "last.ckpt")
    save_checkpoint({k: v for k, v in first.items() if k != "format_version"}, tmp_path / "copy.ckpt")
    assert_same(load_checkpoint(tmp_path / "copy.ckpt"), first)
    assert first["trainer"]["epoch"] == 2 and len(first["history"]) == 2


class Exploit:
    """Pickles as a call of Path.touch: loading it with weights_only=False would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_load_refuses_pickled_objects(tmp_path):
    marker = tmp_path / "code-was-executed"
    path = tmp_path / "evil.ckpt"
    torch.save({"format_version": FORMAT_VERSION, "model": {}, "payload": Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="evil.ckpt"):
        load_checkpoint(path)
    assert not marker.exists(), "loading a checkpoint executed pickled code"


def test_load_refuses_a_custom_class_instance(tmp_path):
    path = tmp_path / "custom.ckpt"
    torch.save({"format_version": FORMAT_VERSION, "config": Config()}, path)  # a pydantic object, not a dict
    with pytest.raises(CheckpointError, match="custom.ckpt"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        (b"", "cannot be read"),
        (b"\x00\x01garbage", "cannot be read"),
        ("plain-list", "not an autolfads checkpoint"),
        ("old-version", "format version"),
    ],
    ids=["missing", "empty", "garbage", "not-a-dict", "wrong-version"],
)
def test_load_refuses_foreign_files(tmp_path, content, match):
    path = tmp_path / "x.ckpt"
    if content == "plain-list":
        torch.save([torch.zeros(2)], path)
    elif content == "old-version":
        torch.save({"format_version": FORMAT_VERSION + 1}, path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_remove_stale_temporaries_keeps_checkpoints(tmp_path):
    for name in (".last.ckpt.abc123.tmp", ".metrics.csv.tmp", ".config.yaml.ff.tmp"):
        (tmp_path / name).write_bytes(b"partial")
    for name in ("last.ckpt", "best.ckpt", "metrics.csv", "notes.tmp"):
        (tmp_path / name).write_bytes(b"keep")
    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt", "metrics.csv", "notes.tmp"]


# --- resume equivalence through the Python API ----------------------------------------------------------------------


def tiny_config(max_epochs: int = 10, **train_overrides) -> Config:
    overrides = tiny_overrides(train__max_epochs=max_epochs, **{f"train__{k}": v for k, v in train_overrides.items()})
    return apply_overrides(Config(), overrides)


def split_and_whole_runs(tmp_path: Path, data: Path, config: Config) -> tuple[Path, Path]:
    whole, split = tmp_path / "whole", tmp_path / "split"
    result = train(config, data, whole, epochs=4, echo=None)
    assert result.epochs == 4 and not result.complete
    assert train(config, data, split, epochs=2, echo=None).epochs == 2
    assert train(config, data, split, epochs=2, echo=None).epochs == 4
    return whole, split


def assert_runs_identical(whole: Path, split: Path) -> None:
    a, b = load_checkpoint(whole / "last.ckpt"), load_checkpoint(split / "last.ckpt")
    assert a["trainer"]["epoch"] == b["trainer"]["epoch"] == 4
    assert list(a["model"]) == list(b["model"])
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert_same(a["optimizer"], b["optimizer"], "optimizer")
    assert_same(a["trainer"], b["trainer"], "trainer")
    assert_same(a["rng"], b["rng"], "rng")
    assert (whole / "metrics.csv").read_text() == (split / "metrics.csv").read_text()
    with open(whole / "metrics.csv", newline="") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1, 2, 3]


def test_resume_is_equivalent_to_an_uninterrupted_run(tmp_path, lorenz_file):
    assert_runs_identical(*split_and_whole_runs(tmp_path, lorenz_file, tiny_config()))


def test_resume_keeps_the_decayed_learning_rate(tmp_path, lorenz_file):
    # Regression: train() once compared the config's float64 hyperparameters with the restored float32 ones, found
    # them all "new" on every resume, and reset the decayed learning rate to lr_init.
    # lr_patience 0: epoch 0 sets the best; the next two do not improve on it and each halves the rate, the
    # second of them just before the resume (the lr column is the rate an epoch trained with)
    config = tiny_config(lr_schedule=True, lr_patience=0, lr_decay=0.5)
    whole, split = split_and_whole_runs(tmp_path, lorenz_file, config)
    with open(whole / "metrics.csv", newline="") as f:
        assert [float(row["lr"]) for row in csv.DictReader(f)] == pytest.approx([4e-3, 4e-3, 2e-3, 1e-3])
    with open(split / "metrics.csv", newline="") as f:
        assert [float(row["lr"]) for row in csv.DictReader(f)] == pytest.approx([4e-3, 4e-3, 2e-3, 1e-3])
    assert_runs_identical(whole, split)


def test_resume_log_names_only_changed_hyperparameters(tmp_path, lorenz_file):
    config = tiny_config()
    train(config, lorenz_file, tmp_path, epochs=1, echo=None)
    train(apply_overrides(config, ["train.lr_init", "0.002"]), lorenz_file, tmp_path, epochs=1, echo=None)
    resumed = [line for line in (tmp_path / "train.log").read_text().splitlines() if "resumed from" in line]
    assert len(resumed) == 1 and "at epoch 1" in resumed[0]
    assert "'lr_init': 0.002" in resumed[0]
    for unchanged in ("dropout_rate", "cd_rate", "kl_ic_weight", "l2_gen_scale"):
        assert unchanged not in resumed[0], resumed[0]


# --- kill -9 --------------------------------------------------------------------------------------------------------


def count_rows(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_kill_9_mid_training_then_rerun_resumes(tmp_path, lorenz_file, tiny_model):
    max_epochs = 150
    folder = tmp_path / "run"
    command = cli_command(
        "train",
        "--data",
        lorenz_file,
        "--checkpoint",
        folder,
        "--quiet",
        # every epoch written (the default writes at most every 30 s): the kill comes after the fourth
        *tiny_model(train__max_epochs=max_epochs, train__checkpoint_every_s=0),
    )
    log = open(tmp_path / "first.err", "w")  # noqa: SIM115 - closed in the finally below, after the kill
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=cli_env())
    try:
        deadline = time.monotonic() + 120
        while count_rows(folder / "metrics.csv") < 4 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert process.poll() is None, "training ended before it could be killed"
        assert (folder / "last.ckpt").exists()
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()

    killed_at = load_checkpoint(folder / "last.ckpt")["trainer"]["epoch"]
    assert 4 <= killed_at < max_epochs
    result = subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert not list(folder.glob(".*.tmp"))
    assert f"resumed from {folder / 'last.ckpt'} at epoch {killed_at}" in (folder / "train.log").read_text()
    with open(folder / "metrics.csv", newline="") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == list(range(max_epochs))
    final = load_checkpoint(folder / "last.ckpt")
    assert final["trainer"]["epoch"] == max_epochs and len(final["history"]) == max_epochs
    assert (folder / "lfads_output.h5").is_file()


WRITER = """
import sys, torch
from autolfads.train.checkpoint import save_checkpoint
path, counter = sys.argv[1], int(sys.argv[2])
while True:
    counter += 1
    data = torch.full((5_000_000,), float(counter))
    save_checkpoint({"counter": counter, "data": data, "tail": [counter] * 100}, path)
"""


@pytest.mark.slow
def test_kill_9_during_checkpoint_writes_leaves_a_whole_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    chooser = random.Random(1234)
    counter, killed_with_temporary = 0, 0
    for _ in range(5):
        before = path.stat().st_mtime_ns if path.exists() else None
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(counter)], env=cli_env())
        try:
            deadline = time.monotonic() + 60
            # wait for one complete write by this process, then kill it at a random moment of later ones
            while (not path.exists() or path.stat().st_mtime_ns == before) and time.monotonic() < deadline:
                assert process.poll() is None, "writer died"
                time.sleep(0.002)
            time.sleep(chooser.uniform(0.0, 0.4))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        killed_with_temporary += bool(list(tmp_path.glob(".*.tmp")))
        payload = load_checkpoint(path)
        assert payload["counter"] > counter, "no new checkpoint was written"
        counter = payload["counter"]
        data = payload["data"]
        assert data.shape == (5_000_000,) and data.dtype == torch.float32
        assert bool((data == float(counter)).all()), "checkpoint mixes two writes"
        assert payload["tail"] == [counter] * 100
        remove_stale_temporaries(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    print(f"{killed_with_temporary} of 5 kills left a temporary file")
