"""In-memory containers for one LFADS data set: three splits of float32 tensors plus derived sizes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autolfads.errors import DataError

SPLIT_NAMES = ("train", "valid", "test")


# eq=False: tensors have no single truth value, so generated __eq__ would raise.
@dataclass(frozen=True, eq=False)
class Split:
    """One split of trials.

    encod: (n, encod_seq_len, encod_dim), what the encoders see (held-in neurons, trial bins).
    recon: (n, recon_seq_len, recon_dim), what is reconstructed (held-in + held-out neurons,
        trial + forward bins); None when the file has no targets for this split (e.g. NLB test).
    ext_input: (n, recon_seq_len, ext_input_dim) or None.
    truth: (n, recon_seq_len, recon_dim) true rates in counts per bin, or None.
    inds: (n,) int64 trial indices from the file's *_inds, else arange(n).
    conditions: (n,) int64 condition of every trial from the file's *_cond_idx, or None.
    """

    name: str
    encod: torch.Tensor
    recon: torch.Tensor | None
    ext_input: torch.Tensor | None
    truth: torch.Tensor | None
    inds: np.ndarray
    conditions: np.ndarray | None = None

    @property
    def n_trials(self) -> int:
        return int(self.encod.shape[0])


@dataclass(frozen=True, eq=False)
class LFADSData:
    """A loaded data file. Sizes come from the train split, which load_data checked against the others."""

    path: Path
    layout: str  # "single" (train_data...) or "encod_recon" (train_encod_data/train_recon_data...)
    train: Split
    valid: Split
    test: Split | None
    conversion_factor: float | None

    @property
    def encod_dim(self) -> int:
        return int(self.train.encod.shape[2])

    @property
    def recon_dim(self) -> int:
        return int(self._train_recon.shape[2])

    @property
    def cs_dim(self) -> int:
        """Held-out (co-smoothing) neurons: the last columns of recon."""
        return self.recon_dim - self.encod_dim

    @property
    def encod_seq_len(self) -> int:
        return int(self.train.encod.shape[1])

    @property
    def recon_seq_len(self) -> int:
        return int(self._train_recon.shape[1])

    @property
    def fp_len(self) -> int:
        """Forward-prediction bins: the last steps of recon."""
        return self.recon_seq_len - self.encod_seq_len

    @property
    def ext_input_dim(self) -> int:
        ext_input = self.train.ext_input
        return 0 if ext_input is None else int(ext_input.shape[2])

    @property
    def has_truth(self) -> bool:
        """True when both train and valid carry true rates (test often has none)."""
        return self.train.truth is not None and self.valid.truth is not None

    @property
    def splits(self) -> list[Split]:
        return [split for split in (self.train, self.valid, self.test) if split is not None]

    @property
    def name(self) -> str:
        """The session's name in multi-session runs and its output file: the data file's stem."""
        return Path(self.path).stem

    @property
    def _train_recon(self) -> torch.Tensor:
        # load_data always fills train.recon; a hand-built LFADSData without it is a programming error.
        if self.train.recon is None:
            raise ValueError("the train split must have reconstruction targets")
        return self.train.recon


def check_sessions(sessions: list[LFADSData]) -> None:
    """Sessions stitched into one model must share their bins, forward bins and external inputs."""
    if not sessions:
        raise DataError("no sessions given")
    names = [session.name for session in sessions]
    if len(set(names)) != len(names):
        raise DataError(f"session files must have distinct names (each names its output file); got {names}")
    first = sessions[0]
    for session in sessions[1:]:
        for what, key in (
            ("time bins", "recon_seq_len"),
            ("forward-prediction bins", "fp_len"),
            ("external inputs", "ext_input_dim"),
        ):
            if getattr(session, key) != getattr(first, key):
                raise DataError(
                    f"sessions stitched into one model must have the same {what}: {first.path} has {getattr(first, key)}, "
                    f"{session.path} has {getattr(session, key)}; rebin or trim the sessions to a common trial length"
                )
