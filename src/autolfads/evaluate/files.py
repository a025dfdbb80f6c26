"""Files of an evaluation: LFADS output rates in, NLB submissions and JSON scores out.

The NLB targets file (written by `autolfads data nlb`, read here) is data/nlb_targets.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ..data.hdf5 import KIND_ATTR, write_lfads_h5
from ..data.output_file import read_output
from ..errors import DataError
from ..files import write_atomic
from .scoring import SUBMISSION_KEYS, check_rates


def read_output_rates(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """An LFADS output file -> {split: (trial ids, rates)} for every split it holds; rates are checked."""
    output = read_output(path, ("rates",))
    for split, fields in output.splits.items():
        check_rates(fields["rates"], f"{split}_rates", str(output.path))
    return {split: (fields["inds"], fields["rates"]) for split, fields in output.splits.items()}


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
    return write_lfads_h5(path, arrays, {KIND_ATTR: "nlb_submission"}, compression=True)


def write_json(path: str | Path, data: dict) -> Path:
    """Write `data` as indented JSON, atomically."""
    try:
        return write_atomic(path, json.dumps(data, indent=2) + "\n")
    except OSError as err:
        raise DataError(f"cannot write {path}: {err}") from None
