"""`lfads_output.h5`, the file `autolfads sample` writes: its one writer and its one reader.

Layout: per split (train, valid, ...) `<split>_inds` (the trial ids of the data file) and `<split>_<field>`
arrays with trials first (rates, factors, gen_inputs, ...: train/output.py's OUTPUT_FIELDS); file attributes
`autolfads_kind = lfads_output`, the version, the samples, the data file, the session and its identity.
Readers (evaluate, report, export-nwb, the ensemble) all go through `read_output`. Light: h5py and numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DataError
from .hdf5 import KIND_ATTR, write_lfads_h5

OUTPUT_KIND = "lfads_output"
INDS = "inds"


@dataclass(frozen=True)
class OutputFile:
    """What an output file holds: {split: {field: array}} (each split with its "inds") and the attributes."""

    path: Path
    splits: dict[str, dict[str, np.ndarray]]
    attrs: dict[str, Any]

    def field(self, split: str, name: str) -> np.ndarray:
        return self.splits[split][name]

    def arrays(self) -> dict[str, np.ndarray]:
        """The file's data sets by name (`<split>_<field>`)."""
        return _data_sets(self.splits)


def write_output_file(path: str | Path, splits: Mapping[str, Mapping[str, np.ndarray]], attrs: Mapping) -> Path:
    """splits: {split: {field: array, "inds": trial ids}}; written atomically, marked as an LFADS output."""
    return write_lfads_h5(path, _data_sets(splits), attrs={**attrs, KIND_ATTR: OUTPUT_KIND})


def _data_sets(splits: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """{split: {field: array}} -> {"<split>_<field>": array}, the file's names."""
    return {f"{split}_{name}": value for split, fields in splits.items() for name, value in fields.items()}


def read_output(path: str | Path, fields: Sequence[str] | None = None) -> OutputFile:
    """The splits that have rates, each with its trial ids and `fields` (default: every field stored; a field a
    split lacks is left out). A file with no rates, or rates without trial ids, is a DataError naming it."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            names = [key.removesuffix("_rates") for key in h5 if key.endswith("_rates")]
            if not names:
                raise DataError(f"{path}: no *_rates in the file: not an LFADS output (`autolfads sample` writes one)")
            splits = {}
            for split in names:
                if f"{split}_{INDS}" not in h5:
                    raise DataError(f"{path}: '{split}_rates' has no '{split}_{INDS}' to match its trials")
                stored = [key.removeprefix(f"{split}_") for key in h5 if key.startswith(f"{split}_")]
                wanted = stored if fields is None else [name for name in (*fields, INDS) if name in stored]
                splits[split] = {name: h5[f"{split}_{name}"][()] for name in dict.fromkeys(wanted)}
            attrs = {key: (value.item() if isinstance(value, np.generic) else value) for key, value in h5.attrs.items()}
            return OutputFile(path, splits, attrs)
    except FileNotFoundError:
        raise DataError(f"output file {path} does not exist") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read as HDF5: {err}") from None
