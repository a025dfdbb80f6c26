"""Read LFADS-format HDF5 data files with clear errors, and write HDF5 files atomically.

Two layouts are read:
- "single": train_data, valid_data [, test_data] hold every neuron and bin; the last cs_dim columns are
  held-out neurons and the last fp_len steps forward-prediction bins.
- "encod_recon": {train,valid}_encod_data and {train,valid}_recon_data [, test_encod_data, test_recon_data];
  held-out neurons and forward bins are implied by the shape difference.
Both may carry {split}_ext_input, {split}_truth, {split}_inds and conversion_factor. Other keys are ignored.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from autolfads.errors import ConfigError, DataError
from autolfads.files import write_atomic
from autolfads.names import OBSERVATION_MODELS

SPLIT_NAMES = ("train", "valid", "test")
# File attributes our writers set. KIND_ATTR: what a file that is not training data holds, so that a folder of
# our commands' outputs trains as --data FOLDER (dataset.find_data_files skips such files). MISSING_BINS_ATTR
# true: the data arrays' NaN entries are missing bins, which training masks (SBTT) without train.sbtt.
KIND_ATTR = "autolfads_kind"
NOT_DATA_KINDS = {
    "nlb_targets": "NLB evaluation targets",
    "truth": "true rates of a synthetic session",
    "lfads_output": "a model's output",
    "nlb_submission": "an NLB submission",
    "recording": "a continuous recording (chop it into trials: autolfads data chop)",
}
MISSING_BINS_ATTR = "nan_is_missing"
TARGETS_SUFFIX = "_targets"  # targets files written before KIND_ATTR: `data nlb|nwb|spikes` name them OUT_targets.h5
FLOAT32_EXACT = 2**24  # float32, what training computes in, holds every integer up to this and not all above it


def _is_count(array: np.ndarray) -> np.ndarray:
    ok = array >= 0
    if np.issubdtype(array.dtype, np.floating):  # integer dtypes need no rounding check (or its copy)
        ok &= array == np.round(array)
    return ok


# What each observation model needs from the data, beyond being finite.
_VALUE_RULES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str] | None] = {
    "poisson": (_is_count, "non-negative integer spike counts"),
    "gaussian": None,
    "gamma": (lambda a: a > 0, "positive values"),
    "zig": (lambda a: a >= 0, "non-negative values"),
}
assert tuple(_VALUE_RULES) == OBSERVATION_MODELS, "every observation model needs its value rule"


@dataclass(frozen=True, eq=False)
class SplitArrays:
    """One split as the file holds it, checked (see dataset.Split for the shapes). NaN entries (missing bins,
    allow_nan) are kept; truth is as stored (in counts per bin only once divided by conversion_factor)."""

    name: str
    encod: np.ndarray
    recon: np.ndarray | None
    ext_input: np.ndarray | None
    truth: np.ndarray | None
    inds: np.ndarray
    conditions: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class DataArrays:
    """A data file's checked contents: its layout, its splits (train, valid, and test if present)."""

    path: Path
    layout: str  # "single" (train_data...) or "encod_recon" (train_encod_data/train_recon_data...)
    splits: dict[str, SplitArrays]
    conversion_factor: float | None
    missing_marked: bool = False  # the file marks its NaN entries as missing bins (MISSING_BINS_ATTR)


def read_lfads_h5(
    file: str | Path,
    *,
    cs_dim: int = 0,
    fp_len: int = 0,
    reconstruction: str = "poisson",
    allow_nan: bool = False,
) -> DataArrays:
    """Read and check an LFADS data file.

    allow_nan (train.sbtt): NaN entries of the data arrays are missing bins, as they are in a file whose
    MISSING_BINS_ATTR is true whatever allow_nan says. Inf is never accepted.
    cs_dim / fp_len: held-out neurons (last columns) and forward-prediction bins (last steps). In the
    "single" layout they split the data; in the "encod_recon" layout the file implies them, and a
    non-zero value passed here must agree. Every problem raises DataError naming the file and key.
    """
    if reconstruction not in _VALUE_RULES:
        raise ConfigError(f"unknown reconstruction {reconstruction!r}; expected one of {', '.join(OBSERVATION_MODELS)}")
    file = Path(file)
    for name, value in (("cs_dim", cs_dim), ("fp_len", fp_len)):
        if value < 0:
            raise DataError(f"{file}: {name} must be >= 0, got {value}")
    try:
        h5 = h5py.File(file, "r")
    except OSError as err:
        raise DataError(f"{file}: cannot open as HDF5 (truncated or not an HDF5 file?): {err}") from err
    with h5:
        try:
            return _Reader(h5, file, reconstruction, allow_nan).read(cs_dim, fp_len)
        except OSError as err:  # damage that only shows when a part of the file is read
            raise DataError(f"{file}: cannot read the file (truncated or corrupt?): {err}") from err


def write_lfads_h5(
    path: str | Path,
    arrays: Mapping[str, np.ndarray | float | int | str],
    attrs: Mapping[str, Any] | None = None,
    *,
    compression: bool = False,
) -> Path:
    """Write `arrays` as datasets (and `attrs` as file attributes) to `path`, atomically.

    Through files.write_atomic: readers never see a partial file and a failed write leaves an existing
    file untouched. compression: gzip every non-scalar dataset. The file is built in memory and then
    written as bytes: a full disk is one OSError of that write, never an error inside HDF5, whose file
    close after a failed write crashes the process (h5py 3.16 with HDF5 2.0: a segfault).
    """

    def write(tmp: Path) -> None:
        image = io.BytesIO()
        with h5py.File(image, "w") as h5:
            for key, value in arrays.items():
                _write_dataset(h5, key, value, compression)
            for key, value in (attrs or {}).items():
                h5.attrs[key] = value
        tmp.write_bytes(image.getbuffer())

    try:
        return write_atomic(path, write, mkdir=True)
    except OSError as err:
        raise DataError(f"cannot write {path}: {err}") from err


def _write_dataset(h5: h5py.File, key: str, value: np.ndarray | float | int | str, compression: bool) -> None:
    array = np.asarray(value)
    if array.dtype == object:  # ragged numeric rows (e.g. NLB's trials per condition): variable-length arrays
        rows = [np.asarray(row) for row in value]
        ragged = np.empty(len(rows), dtype=object)
        for i, row in enumerate(rows):  # one by one: numpy would stack rows of equal length into 2-D
            ragged[i] = row
        h5.create_dataset(key, data=ragged, dtype=h5py.vlen_dtype(np.result_type(*rows)))
        return
    if array.dtype.kind == "U":  # HDF5 has no fixed-width unicode type
        array = array.astype(h5py.string_dtype())
    compress = compression and array.ndim > 0 and array.size > 0  # scalars cannot be chunked
    h5.create_dataset(key, data=array, compression="gzip" if compress else None)


def not_data_reason(path: str | Path) -> str | None:
    """What `path` holds when it is not training data (its KIND_ATTR; without one, a name ending in _targets),
    else None. A file that cannot be opened may be data: reading it says what is wrong."""
    try:
        with h5py.File(path, "r") as h5:
            kind = h5.attrs.get(KIND_ATTR)
    except OSError:
        kind = None
    if kind is not None:
        return NOT_DATA_KINDS.get(str(kind), str(kind))
    if Path(path).stem.endswith(TARGETS_SUFFIX):
        return f"{NOT_DATA_KINDS['nlb_targets']} (by its name)"
    return None


def preview(names: list[str], limit: int = 20) -> str:
    if not names:
        return "nothing"
    more = f" ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class _Reader:
    """Reads one open file; every problem becomes a DataError that names the file and key."""

    def __init__(self, h5: h5py.File, file: Path, reconstruction: str, allow_nan: bool = False) -> None:
        self.missing_marked = bool(h5.attrs.get(MISSING_BINS_ATTR, False))
        self.allow_nan = allow_nan or self.missing_marked
        self.h5 = h5
        self.file = file
        self.keys = set(h5.keys())
        self.value_rule = _VALUE_RULES[reconstruction]
        self.reconstruction = reconstruction

    def error(self, message: str) -> DataError:
        return DataError(f"{self.file}: {message}")

    def read(self, cs_dim: int, fp_len: int) -> DataArrays:
        if "train_encod_data" in self.keys or "valid_encod_data" in self.keys:
            layout, targets = "encod_recon", self._encod_recon_targets(cs_dim, fp_len)
        elif "train_data" in self.keys or "valid_data" in self.keys:
            layout, targets = "single", self._single_targets(cs_dim, fp_len)
        else:
            raise self.error(
                "not an LFADS data file: expected train_data and valid_data (single layout) or "
                "train_encod_data, train_recon_data, valid_encod_data and valid_recon_data (encod/recon layout); "
                f"it has keys: {preview(sorted(self.keys))}"
            )
        conversion_factor = self._conversion_factor()
        recon_shape = targets["train"][1].shape[1:]
        splits = {name: self._split(name, encod, recon, recon_shape) for name, (encod, recon) in targets.items()}
        self._check_ext_inputs_agree(splits)
        return DataArrays(self.file, layout, splits, conversion_factor, self.missing_marked)

    # --- layouts: each returns {split: (encod, recon)} as checked numpy arrays ---

    def _single_targets(self, cs_dim: int, fp_len: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        names = [name for name in SPLIT_NAMES if name != "test" or "test_data" in self.keys]
        data = {name: self._data(f"{name}_data") for name in names}
        for name in names[1:]:
            self._check_same_sizes(f"{name}_data", data[name], "train_data", data["train"])
        n_bins, n_neurons = data["train"].shape[1:]
        if cs_dim >= n_neurons:
            raise self.error(
                f"cs_dim={cs_dim} held-out neurons leaves none held in: train_data has {n_neurons} neurons"
            )
        if fp_len >= n_bins:
            raise self.error(f"fp_len={fp_len} forward bins leaves no trial bins: train_data has {n_bins} time bins")
        return {name: (array[:, : n_bins - fp_len, : n_neurons - cs_dim], array) for name, array in data.items()}

    def _encod_recon_targets(self, cs_dim: int, fp_len: int) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        targets: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for name in SPLIT_NAMES:
            encod_key, recon_key = f"{name}_encod_data", f"{name}_recon_data"
            if name == "test" and encod_key not in self.keys:
                if recon_key in self.keys:
                    raise self.error(f"{recon_key!r} is present but {encod_key!r} is missing")
                continue
            encod = self._data(encod_key)
            recon = self._data(recon_key) if name != "test" or recon_key in self.keys else None
            if recon is not None and recon.shape[0] != encod.shape[0]:
                raise self.error(
                    f"{encod_key!r} has {encod.shape[0]} trials but {recon_key!r} has {recon.shape[0]}; they must match"
                )
            if name == "train":
                self._check_encod_fits_recon(encod.shape, recon.shape, cs_dim, fp_len)
            else:
                self._check_same_sizes(encod_key, encod, "train_encod_data", targets["train"][0])
                if recon is not None:
                    self._check_same_sizes(recon_key, recon, "train_recon_data", targets["train"][1])
            targets[name] = (encod, recon)
        return targets

    def _check_encod_fits_recon(self, encod_shape: tuple, recon_shape: tuple, cs_dim: int, fp_len: int) -> None:
        (_, encod_bins, encod_neurons), (_, recon_bins, recon_neurons) = encod_shape, recon_shape
        if encod_neurons > recon_neurons or encod_bins > recon_bins:
            raise self.error(
                f"train_encod_data is {encod_bins} bins x {encod_neurons} neurons but train_recon_data is "
                f"{recon_bins} x {recon_neurons}; encod must be the leading bins and neurons of recon"
            )
        for name, passed, implied in (
            ("cs_dim", cs_dim, recon_neurons - encod_neurons),
            ("fp_len", fp_len, recon_bins - encod_bins),
        ):
            if passed and passed != implied:
                raise self.error(
                    f"{name}={passed} was requested but train_encod_data ({encod_bins} x {encod_neurons}) and "
                    f"train_recon_data ({recon_bins} x {recon_neurons}) imply {name}={implied}"
                )

    # --- per-split extras ---

    def _split(
        self,
        name: str,
        encod: np.ndarray,
        recon: np.ndarray | None,
        recon_shape: tuple[int, int],
    ) -> SplitArrays:
        n_trials = encod.shape[0]
        ext_input = self._optional(f"{name}_ext_input", 3)
        if ext_input is not None and ext_input.shape[:2] != (n_trials, recon_shape[0]):
            raise self.error(
                f"'{name}_ext_input' has shape {ext_input.shape}; expected {n_trials} trials x {recon_shape[0]} "
                "bins (the reconstructed bins) x inputs"
            )
        truth = self._optional(f"{name}_truth", 3)
        if truth is not None and truth.shape != (n_trials, *recon_shape):
            raise self.error(f"'{name}_truth' has shape {truth.shape}; expected {(n_trials, *recon_shape)}")
        return SplitArrays(
            name=name,
            encod=encod,
            recon=recon,
            ext_input=ext_input,
            truth=truth,
            inds=self._inds(f"{name}_inds", n_trials),
            conditions=self._inds(f"{name}_cond_idx", n_trials, required=False),
        )

    def _inds(self, key: str, n_trials: int, required: bool = True) -> np.ndarray | None:
        """Integer labels, one per trial (trial indices, conditions); absent: arange(n), or None if not required."""
        inds = self._optional(key, 1)
        if inds is None:
            return np.arange(n_trials, dtype=np.int64) if required else None
        if inds.shape[0] != n_trials:
            raise self.error(f"{key!r} has {inds.shape[0]} entries but the split has {n_trials} trials")
        if not np.array_equal(inds, np.round(inds)):
            raise self.error(f"{key!r} must hold integers, one per trial")
        return inds.astype(np.int64)

    def _check_ext_inputs_agree(self, splits: dict[str, SplitArrays]) -> None:
        dims = {name: None if s.ext_input is None else s.ext_input.shape[2] for name, s in splits.items()}
        if len(set(dims.values())) > 1:
            found = ", ".join(
                f"{name}_ext_input: {'missing' if d is None else f'{d} inputs'}" for name, d in dims.items()
            )
            raise self.error(f"external inputs must be given for every split with the same width; found {found}")

    def _conversion_factor(self) -> float | None:
        if "conversion_factor" in self.keys:
            value = self._read("conversion_factor")
        elif "conversion_factor" in self.h5.attrs:
            value = np.asarray(self.h5.attrs["conversion_factor"])
        else:
            return None
        is_real = np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)
        factor = float(value.reshape(())) if is_real and value.size == 1 else float("nan")
        if not (np.isfinite(factor) and factor > 0):
            raise self.error(f"'conversion_factor' must be one positive finite number, got {value.tolist()!r}")
        return factor

    # --- reading and checking single datasets ---

    def _read(self, key: str) -> np.ndarray:
        node = self.h5[key]
        if not isinstance(node, h5py.Dataset):
            raise self.error(f"{key!r} is a group; expected a dataset")
        try:
            return np.asarray(node[()])
        except (OSError, RuntimeError, KeyError) as err:
            raise self.error(f"cannot read {key!r} (truncated or corrupt file?): {err}") from err

    def _optional(self, key: str, rank: int) -> np.ndarray | None:
        return self._checked(key, rank) if key in self.keys else None

    def _checked(self, key: str, rank: int, nan_ok: bool = False) -> np.ndarray:
        """A real-valued, finite (NaN allowed if nan_ok), non-empty array of the given rank."""
        if key not in self.keys:
            raise self.error(f"required key {key!r} is missing; the file has: {preview(sorted(self.keys))}")
        array = self._read(key)
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise self.error(f"{key!r} has dtype {array.dtype}; expected integers or floats")
        if array.ndim != rank:
            expected = "trials x time x neurons" if rank == 3 else "one entry per trial"
            raise self.error(f"{key!r} has shape {array.shape} ({array.ndim}-D); expected {rank}-D ({expected})")
        if array.shape[0] == 0:
            raise self.error(f"{key!r} is empty: shape {array.shape} has 0 trials")
        if 0 in array.shape:
            raise self.error(f"{key!r} is empty: shape {array.shape}")
        if np.issubdtype(array.dtype, np.floating):
            n_inf = int(np.count_nonzero(np.isinf(array)))
            n_nan = int(np.count_nonzero(np.isnan(array)))
            if n_inf:
                raise self.error(
                    f"{key!r} holds {n_inf + n_nan} NaN or infinite values ({n_inf} infinite: Inf is never allowed; "
                    "NaN may mark missing bins of the data arrays when train.sbtt is true)"
                )
            if n_nan and not nan_ok:
                hint = (
                    f" (data arrays may mark missing bins with NaN when train.sbtt is true or the file's attribute "
                    f"{MISSING_BINS_ATTR} says so, as `autolfads data` writes it)"
                    if rank == 3
                    else ""
                )
                raise self.error(f"{key!r} holds {n_nan} NaN values{hint}")
        return array

    def _data(self, key: str) -> np.ndarray:
        """A data array (trials x time x neurons) that also meets the reconstruction's value rule."""
        array = self._checked(key, 3, nan_ok=self.allow_nan)
        if self.value_rule is not None:
            is_ok, expected = self.value_rule
            with np.errstate(invalid="ignore"):
                bad = ~is_ok(array) & ~np.isnan(array)  # NaN (missing, SBTT) was checked above
            n_bad = int(np.count_nonzero(bad))
            if n_bad:
                index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
                raise self.error(
                    f"{key!r} must hold {expected} for {self.reconstruction} reconstruction, but {n_bad} entries "
                    f"do not, e.g. {key}[{', '.join(map(str, index))}] = {array[index].item()!r}"
                    + self._value_hint(array)
                )
        self._check_trainable(key, array)
        return array

    def _check_trainable(self, key: str, array: np.ndarray) -> None:
        """Data that reads but cannot train sensibly: counts float32 (what training computes in) rounds, a trial
        with no observed entry (all NaN), a train or valid split of nothing but zeros."""
        if self.reconstruction == "poisson":
            with np.errstate(invalid="ignore"):
                too_big = array > FLOAT32_EXACT
            if too_big.any():
                index = tuple(int(i) for i in np.unravel_index(int(np.argmax(too_big)), array.shape))
                raise self.error(
                    f"{key!r} holds {int(too_big.sum())} counts above 2**24 = {FLOAT32_EXACT}, the largest float32 "
                    f"holds exactly, e.g. {key}[{', '.join(map(str, index))}] = {array[index].item()!r}: are these "
                    "spike counts per bin?"
                )
        if np.issubdtype(array.dtype, np.floating):
            empty = np.isnan(array).all(axis=(1, 2))
            if empty.any():
                raise self.error(
                    f"{key!r} has {int(empty.sum())} trials with no observed entry (all NaN), e.g. trial row "
                    f"{int(np.argmax(empty))}; leave such trials out of the file"
                )
        if not key.startswith("test") and not np.any((array != 0) & ~np.isnan(array)):
            raise self.error(f"{key!r} holds nothing but zeros: there is nothing to learn or score")

    def _value_hint(self, array: np.ndarray) -> str:
        if self.reconstruction == "gamma" and np.any(array == 0) and not np.any(array < 0):
            return (
                "; zeros have no Gamma density: use model.reconstruction zig (zero-inflated Gamma) for data with zeros"
            )
        return ""

    def _check_same_sizes(self, key: str, array: np.ndarray, ref_key: str, ref: np.ndarray) -> None:
        if array.shape[1:] != ref.shape[1:]:
            raise self.error(
                f"{key!r} has {array.shape[1]} time bins x {array.shape[2]} neurons but {ref_key!r} has "
                f"{ref.shape[1]} x {ref.shape[2]}; they must agree across splits"
            )
