"""train/batches.py: the training batches of an epoch (the partial last batch dropped) and train-time
augmentations with coordinated dropout's pass rate."""

from __future__ import annotations

import pytest
import torch

from autolfads.train.trainer import Trainer
from helpers import config, make_data


@pytest.fixture(scope="module")
def cfg():
    return config()


@pytest.fixture(scope="module")
def data(cfg):
    return make_data(cfg.model)


def params_snapshot(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.params]


# ============================================================================ batching


def _training_batches(trainer: Trainer) -> list[list[int]]:
    """The trial indices of each training step of one epoch."""
    seen: list[list[int]] = []
    original = trainer._training_part

    def spy(session, indices):
        seen.append(indices.tolist())
        return original(session, indices)

    trainer._training_part = spy
    trainer.train_epoch()
    return seen


@pytest.mark.parametrize(
    ("drop_last", "batch_size", "sizes"),
    [(True, 16, [16, 16]), (False, 16, [16, 16, 8]), (True, 64, [40]), (True, 20, [20, 20])],
)
def test_an_epoch_drops_the_partial_last_batch(data, drop_last, batch_size, sizes):
    """40 training trials: batches of 16 are two steps (8 trials left out, as lfads-torch and lfads-tf2 do);
    a batch larger than the data is one step on all of it, never zero steps."""
    trainer = Trainer(config(train=dict(batch_size=batch_size, drop_last=drop_last)), data)
    batches = _training_batches(trainer)
    assert [len(b) for b in batches] == sizes
    trials = [i for b in batches for i in b]
    assert len(set(trials)) == len(trials)  # no trial twice


@pytest.mark.parametrize(
    "augmentation", [dict(spike_jitter_width=1), dict(temporal_shift_std=1.0, temporal_shift_max=2)]
)
def test_cd_pass_rate_with_train_time_augmentation(data, augmentation):
    """model.cd_pass_rate > 0 with spike jitter or temporal shift trains (it raised a shape RuntimeError)."""
    trainer = Trainer(
        config(model=dict(cd_pass_rate=0.5, **augmentation)), data, population=[{}, {}], member_seeds=[0, 1]
    )
    before = params_snapshot(trainer)
    metrics = trainer.run_epoch()
    assert torch.isfinite(metrics["loss"]).all()
    assert not torch.equal(before[0], trainer.params[0])
