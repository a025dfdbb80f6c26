"""train/run.py: what an epoch of `autolfads train` writes and when (train.run.RunFiles): last.ckpt,
best.ckpt and metrics.csv at most every train.checkpoint_every_s seconds and at the end, always of a whole
epoch."""

import csv

import pytest
import torch

from autolfads.train import run
from autolfads.train.checkpoint import load_checkpoint
from autolfads.train.run import RunFiles, train
from autolfads.train.trainer import Trainer
from helpers import config, make_data
from test_train_checkpoint import assert_same, tiny_config


def epochs_in(path):
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_a_run_writes_its_files_at_the_end_whatever_the_interval(tmp_path, lorenz_file):
    every, rarely = tmp_path / "every", tmp_path / "rarely"
    train(tiny_config(max_epochs=6, checkpoint_every_s=0), lorenz_file, every, echo=None)
    result = train(tiny_config(max_epochs=6, checkpoint_every_s=3600), lorenz_file, rarely, echo=None)
    assert result.complete and epochs_in(rarely / "metrics.csv") == list(range(6))
    for name in ("last.ckpt", "best.ckpt"):
        a, b = load_checkpoint(every / name), load_checkpoint(rarely / name)
        assert_same(a["model"], b["model"], name)
        assert_same(a["trainer"], b["trainer"], name)
    best = load_checkpoint(rarely / "best.ckpt")
    assert best["trainer"]["epoch"] == result.best_epoch + 1  # the best epoch's own state, not a later one


def test_an_error_mid_run_leaves_the_last_whole_epoch_and_resuming_matches(tmp_path, lorenz_file, monkeypatch):
    config = tiny_config(max_epochs=5, checkpoint_every_s=3600)
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    train(config, lorenz_file, whole, echo=None)
    run_epoch = Trainer.run_epoch

    def interrupted(self, *args, **kwargs):
        if self.epoch == 3:
            raise KeyboardInterrupt  # Ctrl-C in the fourth epoch
        return run_epoch(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "run_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config, lorenz_file, broken, echo=None)
    assert load_checkpoint(broken / "last.ckpt")["trainer"]["epoch"] == 3
    assert epochs_in(broken / "metrics.csv") == [0, 1, 2]
    monkeypatch.setattr(Trainer, "run_epoch", run_epoch)
    train(config, lorenz_file, broken, echo=None)
    a, b = load_checkpoint(whole / "last.ckpt"), load_checkpoint(broken / "last.ckpt")
    assert_same(a["model"], b["model"], "model")
    assert_same(a["optimizer"], b["optimizer"], "optimizer")


def test_files_are_written_when_the_interval_has_passed(tmp_path, monkeypatch):
    cfg = config(train={"checkpoint_every_s": 10.0})
    trainer = Trainer(cfg, make_data(cfg.model), member_seeds=[0])
    clock = iter([0.0, 5.0, 12.0, 13.0])  # RunFiles' start, then one reading per epoch
    monkeypatch.setattr(run.time, "monotonic", lambda: next(clock))
    files = RunFiles(tmp_path, cfg)
    trainer.run_epoch()
    files.epoch_done(trainer, improved=False)  # 5 s: nothing written
    assert not (tmp_path / "last.ckpt").exists()
    trainer.run_epoch()
    files.epoch_done(trainer, improved=True)  # 12 s: both epochs' files, the best first
    assert load_checkpoint(tmp_path / "last.ckpt")["trainer"]["epoch"] == 2
    assert load_checkpoint(tmp_path / "best.ckpt")["trainer"]["epoch"] == 2
    assert epochs_in(tmp_path / "metrics.csv") == [0, 1]


def test_what_is_written_is_the_epoch_as_it_ended_not_later_training(tmp_path):
    cfg = config(train={"checkpoint_every_s": 3600.0})
    trainer = Trainer(cfg, make_data(cfg.model), member_seeds=[0])
    files = RunFiles(tmp_path, cfg)
    trainer.run_epoch()
    files.epoch_done(trainer, improved=True)
    at_epoch_1 = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    trainer.run_epoch()  # trains the weights in place
    files.write()
    saved = load_checkpoint(tmp_path / "last.ckpt")
    assert saved["trainer"]["epoch"] == 1 and len(saved["history"]) == 1
    for name, value in at_epoch_1.items():
        assert torch.equal(saved["model"][name], value), name
    assert any(not torch.equal(trainer.model.state_dict()[name], value) for name, value in at_epoch_1.items())
