"""LFADS data in memory: the data files a --data argument names, loaded into splits of float32 tensors.

The file format (reading and checking to NumPy, writing) is data/hdf5.py, which needs no torch; this module
turns what it reads into the tensors training uses.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autolfads.data.hdf5 import MISSING_BINS_ATTR, SplitArrays, not_data_reason, preview, read_lfads_h5
from autolfads.errors import DataError

DATA_SUFFIXES = (".h5", ".hdf5")


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
    missing_bins: int = 0  # NaN entries the file marks as missing bins (MISSING_BINS_ATTR): masked without train.sbtt

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
                    f"sessions stitched into one model must have the same {what}: {first.path} has "
                    f"{getattr(first, key)}, "
                    f"{session.path} has {getattr(session, key)}; rebin or trim the sessions to a common trial length"
                )


def find_data_files(path: str | Path, prefix: str = "") -> list[Path]:
    """The data files `path` names: a file; every *.h5 / *.hdf5 file in a folder whose name starts with
    `prefix` (sorted by name); or the files a glob pattern (data/session_*.h5) matches. Several files are
    several sessions of one multi-session model. Files that hold something else (targets, true rates, model
    outputs: hdf5.not_data_reason) are no sessions: a folder or glob skips them, a file named alone is refused."""
    given = Path(path)
    if given.is_dir():
        entries = sorted(given.iterdir())
        matches = [p for p in entries if p.is_file() and p.suffix in DATA_SUFFIXES and p.name.startswith(prefix)]
        if not matches:
            raise DataError(
                f"no *.h5 or *.hdf5 file whose name starts with {prefix!r} in {given}; "
                f"it holds: {preview([p.name for p in entries])}"
            )
        return _sessions_only(matches, f"in {given} (prefix {prefix!r})")
    if given.exists():
        reason = not_data_reason(given) if given.suffix in DATA_SUFFIXES else None
        if reason is not None:
            raise DataError(f"{given} holds {reason}, not training data; give the data file written beside it")
        return [given]
    if glob.has_magic(str(path)):
        matches = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not matches:
            raise DataError(f"no data file matches the pattern {str(path)!r}")
        return _sessions_only(matches, f"matching {str(path)!r}")
    raise DataError(f"data file {given} does not exist")


def _sessions_only(files: list[Path], where: str) -> list[Path]:
    """The files that may be sessions: never what our commands write beside a data file (hdf5.not_data_reason:
    `data nlb|nwb|spikes --out x.h5` also writes x_targets.h5)."""
    reasons = {file: not_data_reason(file) for file in files}
    sessions = [file for file in files if reasons[file] is None]
    if not sessions:
        skipped = [f"{file.name} ({reason})" for file, reason in reasons.items()]
        raise DataError(f"no LFADS data file {where}, only {preview(skipped)}")
    return sessions


def find_data_file(path: str | Path, prefix: str = "") -> Path:
    """The one data file `path` names (see find_data_files); several mean a multi-session data set."""
    files = find_data_files(path, prefix)
    if len(files) > 1:
        raise DataError(
            f"{len(files)} data files match {str(path)!r} (prefix {prefix!r}): {preview([p.name for p in files])}; "
            "several files are several sessions: load them with load_sessions, or pass one file or a prefix that "
            "selects one"
        )
    return files[0]


def load_data(
    path: str | Path,
    *,
    cs_dim: int = 0,
    fp_len: int = 0,
    prefix: str = "",
    reconstruction: str = "poisson",
    allow_nan: bool = False,
) -> LFADSData:
    """Load and check an LFADS data file (or the one file in directory `path` starting with `prefix`); the
    checks and options are hdf5.read_lfads_h5's. allow_nan (train.sbtt): NaN entries of the data arrays
    are missing bins; they stay NaN in the reconstruction targets and become 0 in the encoder inputs. A file
    that marks its NaN entries as missing bins (MISSING_BINS_ATTR) is read so whatever allow_nan says."""
    arrays = read_lfads_h5(
        find_data_file(path, prefix),
        cs_dim=cs_dim,
        fp_len=fp_len,
        reconstruction=reconstruction,
        allow_nan=allow_nan,
    )
    nan_ok = allow_nan or arrays.missing_marked
    splits = {name: _split(split, arrays.conversion_factor, nan_ok) for name, split in arrays.splits.items()}
    return LFADSData(
        path=arrays.path,
        layout=arrays.layout,
        train=splits["train"],
        valid=splits["valid"],
        test=splits.get("test"),
        conversion_factor=arrays.conversion_factor,
        missing_bins=_nan_count(arrays.splits.values()) if arrays.missing_marked else 0,
    )


def _nan_count(splits) -> int:
    """NaN entries of the data: the reconstruction targets (which hold the encoders' inputs) or the inputs."""
    return sum(int(np.isnan(s.recon if s.recon is not None else s.encod).sum()) for s in splits)


def missing_bins_note(sessions: list[LFADSData]) -> str | None:
    """The one line a run shows when its data files mark missing bins: that training masks them (SBTT)."""
    marked = [s for s in sessions if s.missing_bins]
    if not marked:
        return None
    files = ", ".join(f"{s.path} ({s.missing_bins} NaN entries)" for s in marked)
    return f"missing bins: {files} marks NaN as missing ({MISSING_BINS_ATTR}); training masks them (SBTT)"


def load_sessions(path: str | Path, *, prefix: str = "", **options: Any) -> list[LFADSData]:
    """Every data file `path` names (a file, a folder, a glob; see find_data_files), loaded with load_data's
    options and checked to fit one model: the same bins, forward bins and external inputs. One file is one
    session; several are stitched (each keeps its own neurons)."""
    sessions = [load_data(file, **options) for file in find_data_files(path, prefix)]
    check_sessions(sessions)
    return sessions


def _split(arrays: SplitArrays, conversion_factor: float | None, allow_nan: bool) -> Split:
    truth = None if arrays.truth is None else _tensor(arrays.truth)
    if truth is not None and conversion_factor is not None:
        truth = truth / conversion_factor  # true rates in counts per bin
    return Split(
        name=arrays.name,
        encod=_tensor(np.nan_to_num(arrays.encod, nan=0.0) if allow_nan else arrays.encod),  # SBTT: missing are 0
        recon=None if arrays.recon is None else _tensor(arrays.recon),
        ext_input=None if arrays.ext_input is None else _tensor(arrays.ext_input),
        truth=truth,
        inds=arrays.inds,
        conditions=arrays.conditions,
    )


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
