"""Files of an evaluation: NLB targets (written by `autolfads data nlb`), LFADS output rates, NLB submissions.

The targets file is nlb_tools' target layout, so nlb_tools' evaluate() reads it as is: one group per data
set (mc_maze, mc_maze_20, ...) with eval_spikes_heldout, train_behavior, ..., plus train_trial_ids and
eval_trial_ids (NLB trial ids, to match model rates to trials) and the attributes nlb_dataset and bin_ms.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ..data.hdf5 import write_lfads_h5
from ..errors import DataError, EvaluationError
from ..files import write_text_atomic
from .scoring import SUBMISSION_KEYS, Targets, check_rates

ID_KEYS = ("train_trial_ids", "eval_trial_ids")
NLB_TARGETS = (
    "eval_spikes_heldout",
    "eval_spikes_heldin_forward",
    "eval_spikes_heldout_forward",
    "train_behavior",
    "eval_behavior",
)


def write_targets(path: str | Path, targets: Targets) -> Path:
    arrays = {f"{targets.name}/{key}": value for key, value in targets.arrays.items()}
    arrays[f"{targets.name}/train_trial_ids"] = targets.train_ids
    arrays[f"{targets.name}/eval_trial_ids"] = targets.eval_ids
    attrs = {"nlb_dataset": targets.dataset, "bin_ms": targets.bin_ms, "group": targets.name}
    if targets.shape is not None:
        attrs["shape"] = list(targets.shape)
    return write_lfads_h5(path, arrays, attrs=attrs, compression=True)


def read_targets(path: str | Path) -> Targets:
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            name = h5.attrs.get("group")
            if name is None or name not in h5:
                raise DataError(
                    f"{path}: not an NLB targets file written by `autolfads data nlb` (no 'group' attribute naming its data set)"
                )
            group = h5[name]
            shape = tuple(int(n) for n in h5.attrs["shape"]) if "shape" in h5.attrs else None
            # without a shape, the targets are NLB's full set; with one, what the data lack is left out
            required = ID_KEYS if shape else (*NLB_TARGETS, *ID_KEYS)
            missing = [key for key in required if key not in group]
            if missing:
                raise DataError(f"{path}: '{name}/{missing[0]}' is missing; the group has: {', '.join(sorted(group))}")
            arrays = {key: group[key][()] for key in group if key not in ID_KEYS}
            return Targets(
                str(name),
                str(h5.attrs["nlb_dataset"]),
                int(h5.attrs["bin_ms"]),
                arrays,
                group["train_trial_ids"][()],
                group["eval_trial_ids"][()],
                shape,
            )
    except FileNotFoundError:
        raise DataError(f"targets file {path} does not exist") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read as HDF5: {err}") from None


def read_output_rates(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """An LFADS output file -> {split: (trial ids, rates)} for every split it holds; rates are checked."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            splits = [key.removesuffix("_rates") for key in h5 if key.endswith("_rates")]
            if not splits:
                raise EvaluationError(
                    f"{path}: no *_rates in the file: not an LFADS output (`autolfads sample` writes one)"
                )
            rates = {}
            for split in splits:
                if f"{split}_inds" not in h5:
                    raise EvaluationError(f"{path}: '{split}_rates' has no '{split}_inds' to match its trials")
                values = h5[f"{split}_rates"][()]
                check_rates(values, f"{split}_rates", str(path))
                rates[split] = (h5[f"{split}_inds"][()], values)
            return rates
    except FileNotFoundError:
        raise EvaluationError(f"output file {path} does not exist") from None
    except OSError as err:
        raise EvaluationError(f"{path}: cannot read as HDF5: {err}") from None


def write_submission(path: str | Path, name: str, submission: dict[str, np.ndarray]) -> Path:
    """Write (or update) an NLB submission file: `name`'s group is replaced, other data sets' groups are kept,
    so one file can collect every data set. Rates are stored as float32, as nlb_tools does."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    if path.exists():
        try:
            with h5py.File(path, "r") as h5:
                arrays = {f"{group}/{key}": h5[group][key][()] for group in h5 if group != name for key in h5[group]}
        except OSError as err:
            raise DataError(f"{path}: exists but cannot be read as an NLB submission: {err}") from None
    arrays.update({f"{name}/{key}": np.asarray(submission[key], dtype=np.float32) for key in SUBMISSION_KEYS})
    return write_lfads_h5(path, arrays, compression=True)


def write_json(path: str | Path, data: dict) -> Path:
    """Write `data` as indented JSON, atomically."""
    try:
        return write_text_atomic(path, json.dumps(data, indent=2) + "\n")
    except OSError as err:
        raise DataError(f"cannot write {path}: {err}") from None
