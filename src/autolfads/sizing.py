"""Defaults that fit the data: architecture sizes, batch size and schedules from a data set's shape.

`autolfads train` and `autolfads search` with no config file, and `autolfads config init --data`, start from
`config_for_data(shape)`. The rule counts schedules in optimizer steps, not epochs: with 80 training trials and
batch 64 (drop_last) an epoch is one step, so a ramp "of 80 epochs" is 80 steps there and 3,000 steps on a
5,000-trial session. Here the batch gives small data several steps an epoch, and the ramps, patience, the
epoch limit and the search's generations are sized so that each is about the same number of steps on a
50-trial session as on a 5,000-trial one (large data: capped in epochs). Smaller data gets a smaller model.
Pure: shapes in, a Config out (no torch, no files; the command line's parser reads the constants).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config
    from .data.dataset import LFADSData

__all__ = [
    "DataShape",
    "config_for_data",
    "describe_sizing",
    "generation_epochs",
    "shape_of",
    "sized_values",
    "steps_per_epoch",
]

# Batch: about this many steps an epoch, a power of two in [BATCH_MIN, BATCH_MAX].
STEPS_PER_EPOCH_AIM = 5
BATCH_MIN, BATCH_MAX = 8, 128
# Optimizer steps of the KL/L2 ramps, of early stopping's patience, of a whole run and of a PBT generation.
RAMP_STEPS = 500
PATIENCE_STEPS = 1_000
TRAIN_STEPS = 4_000
GENERATION_STEPS = 200
# A run's epoch limit stays in this range whatever the steps say: large data is capped in epochs.
MIN_EPOCHS, MAX_EPOCHS = 50, 1_000
# Early stopping reads a metric smoothed over epochs (train.metrics.smooth): a few epochs are too few to judge.
MIN_PATIENCE_EPOCHS = 10


@dataclass(frozen=True)
class ModelSize:
    """Recurrent sizes of one tier; fac_max caps the factors (about a quarter of the neurons below it)."""

    max_trials: float  # training trials up to which this tier applies
    ic_enc_dim: int
    ci_enc_dim: int
    con_dim: int
    co_dim: int
    gen_dim: int
    fac_max: int


# Smaller data, smaller model. The small tier is examples/configs/small_session.yaml's (measured on real
# MC_Maze_Small, benchmarks/RESULTS.md); the large one lfads-torch's NLB configs (MC_Maze and its scalings).
MODEL_SIZES = (
    ModelSize(150, ic_enc_dim=64, ci_enc_dim=32, con_dim=32, co_dim=2, gen_dim=64, fac_max=16),
    ModelSize(1_000, ic_enc_dim=80, ci_enc_dim=64, con_dim=64, co_dim=4, gen_dim=80, fac_max=32),
    ModelSize(math.inf, ic_enc_dim=100, ci_enc_dim=80, con_dim=80, co_dim=4, gen_dim=100, fac_max=40),
)


@dataclass(frozen=True)
class DataShape:
    """What the rule reads of a data set. Several sessions: trials summed, neurons of the largest session."""

    train_trials: int
    heldin: int  # neurons the encoders see
    heldout: int = 0  # held-out (co-smoothing) neurons: reconstructed, never encoded
    bins: int = 1  # encoded bins per trial
    forward_bins: int = 0  # forward-prediction bins: reconstructed, never encoded
    sessions: int = 1

    @property
    def neurons(self) -> int:
        return self.heldin + self.heldout


def shape_of(sessions: Sequence[LFADSData]) -> DataShape:
    """The shape of loaded data (one session, or the sessions of a stitched model)."""
    largest = max(sessions, key=lambda session: session.recon_dim)
    return DataShape(
        train_trials=sum(session.train.n_trials for session in sessions),
        heldin=largest.encod_dim,
        heldout=largest.cs_dim,
        bins=largest.encod_seq_len,
        forward_bins=largest.fp_len,
        sessions=len(sessions),
    )


def batch_size_for(train_trials: int) -> int:
    """A power of two near trials / STEPS_PER_EPOCH_AIM (rounded down), within [BATCH_MIN, BATCH_MAX]."""
    share = max(train_trials // STEPS_PER_EPOCH_AIM, 1)
    return min(max(2 ** int(math.log2(share)), BATCH_MIN), BATCH_MAX)


def steps_per_epoch(train_trials: int, batch_size: int) -> int:
    """Optimizer steps of an epoch with drop_last (the trainer's default): at least one."""
    return max(train_trials // batch_size, 1)


def _epochs(steps: int, per_epoch: int) -> int:
    return math.ceil(steps / per_epoch)


def generation_epochs(train_trials: int, batch_size: int) -> int:
    """Epochs of a PBT generation: about GENERATION_STEPS optimizer steps, at least one epoch."""
    return _epochs(GENERATION_STEPS, steps_per_epoch(train_trials, batch_size))


def model_size(train_trials: int) -> ModelSize:
    return next(size for size in MODEL_SIZES if train_trials <= size.max_trials)


def sized_values(shape: DataShape) -> dict[str, int]:
    """The keys the rule sets ("section.field") and their values for `shape`."""
    size = model_size(shape.train_trials)
    batch = batch_size_for(shape.train_trials)
    per_epoch = steps_per_epoch(shape.train_trials, batch)
    max_epochs = min(max(_epochs(TRAIN_STEPS, per_epoch), MIN_EPOCHS), MAX_EPOCHS)
    ramp = min(_epochs(RAMP_STEPS, per_epoch), max_epochs // 4)
    return {
        "model.ic_enc_dim": size.ic_enc_dim,
        "model.ic_dim": size.ic_enc_dim,
        "model.ci_enc_dim": size.ci_enc_dim,
        "model.con_dim": size.con_dim,
        "model.co_dim": size.co_dim,
        "model.gen_dim": size.gen_dim,
        "model.fac_dim": min(max(shape.neurons // 4, min(8, shape.neurons)), size.fac_max),
        "train.batch_size": batch,
        "train.max_epochs": max_epochs,
        "train.patience": max(_epochs(PATIENCE_STEPS, per_epoch), MIN_PATIENCE_EPOCHS),
        "train.kl_start_epoch": 0,
        "train.kl_increase_epoch": ramp,
        "train.l2_start_epoch": 0,
        "train.l2_increase_epoch": ramp,
    }


def config_for_data(shape: DataShape, base: Config | None = None) -> Config:
    """`base` (default: the built-in defaults) with the model's sizes, the batch size and the schedules fitted
    to `shape` (`sized_values`); every other key is base's."""
    from .config import Config  # pydantic: not for the parser, which reads the constants above

    tree = (base or Config()).to_dict()
    for key, value in sized_values(shape).items():
        section, field = key.split(".")
        tree[section][field] = value
    return Config.model_validate(tree)


def describe_sizing(shape: DataShape, config: Config) -> str:
    """Two lines: the shape read and the sizes of `config`; its schedules in epochs and steps."""
    model, train = config.model, config.train
    per_epoch = steps_per_epoch(shape.train_trials, train.batch_size)
    sessions = f" in {shape.sessions} sessions" if shape.sessions > 1 else ""
    forward = f" + {shape.forward_bins} forward" if shape.forward_bins else ""
    ramp = max(train.kl_start_epoch + train.kl_increase_epoch, train.l2_start_epoch + train.l2_increase_epoch)
    schedules = ", ".join(
        f"{what} {epochs} epochs ({epochs * per_epoch} steps)"
        for what, epochs in (("KL/L2 ramps", ramp), ("patience", train.patience), ("at most", train.max_epochs))
    )
    sizes = ", ".join(
        f"{name} {getattr(model, name + '_dim')}" for name in ("gen", "fac", "ic_enc", "ci_enc", "con", "co")
    )
    return (
        f"sized from the data: {shape.train_trials} train trials{sessions}, {shape.heldin}+{shape.heldout} neurons, "
        f"{shape.bins}{forward} bins -> batch {train.batch_size} ({per_epoch} steps an epoch), {sizes}\n"
        f"  schedules: {schedules}"
    )
