"""Reading LFADS HDF5 files (both layouts, every kind of bad input) and atomic writing."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from autolfads.data.dataset import LFADSData, find_data_file, load_data
from autolfads.data.hdf5 import write_lfads_h5
from autolfads.errors import ConfigError, DataError

N_TRAIN, N_VALID, N_TEST, BINS, NEURONS, INPUTS = 12, 4, 3, 10, 6, 2
SIZES = {"train": N_TRAIN, "valid": N_VALID, "test": N_TEST}


def _counts(rng: np.random.Generator, n: int, bins: int = BINS, neurons: int = NEURONS) -> np.ndarray:
    return rng.poisson(2.0, size=(n, bins, neurons)).astype(np.int64)


def single_arrays(seed: int = 0) -> dict[str, np.ndarray | float]:
    """A complete single-layout file: data, ext_input, truth (Hz), inds for three splits, plus ignored extras."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray | float] = {"conversion_factor": 100.0, "psth": rng.normal(size=(5, 5))}
    for name, n in SIZES.items():
        arrays[f"{name}_data"] = _counts(rng, n)
        arrays[f"{name}_ext_input"] = rng.normal(size=(n, BINS, INPUTS))
        arrays[f"{name}_truth"] = rng.uniform(1.0, 50.0, size=(n, BINS, NEURONS))
        arrays[f"{name}_inds"] = rng.permutation(100)[:n]
        arrays[f"{name}_behavior"] = rng.normal(size=(n, 3))  # ignored: other shapes are fine
    return arrays


def encod_recon_arrays(seed: int = 0, cs_dim: int = 2, fp_len: int = 3) -> dict[str, np.ndarray]:
    """An encod/recon file whose test split has encoder data only (as in NLB)."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for name, n in SIZES.items():
        recon = _counts(rng, n)
        arrays[f"{name}_encod_data"] = recon[:, : BINS - fp_len, : NEURONS - cs_dim]
        if name != "test":
            arrays[f"{name}_recon_data"] = recon
        arrays[f"{name}_ext_input"] = rng.normal(size=(n, BINS, INPUTS))
    return arrays


def write(tmp_path: Path, arrays: dict, name: str = "data.h5", attrs: dict | None = None) -> Path:
    return write_lfads_h5(tmp_path / name, arrays, attrs)


# --- round trips ---


def test_single_layout_round_trip(tmp_path: Path) -> None:
    arrays = single_arrays()
    path = write(tmp_path, arrays)
    data = load_data(path, cs_dim=2, fp_len=3)

    assert isinstance(data, LFADSData)
    assert (data.path, data.layout, data.conversion_factor) == (path, "single", 100.0)
    assert [s.name for s in data.splits] == ["train", "valid", "test"]
    assert (data.encod_dim, data.recon_dim, data.cs_dim) == (4, 6, 2)
    assert (data.encod_seq_len, data.recon_seq_len, data.fp_len) == (7, 10, 3)
    assert data.ext_input_dim == INPUTS and data.has_truth
    for split in data.splits:
        full = arrays[f"{split.name}_data"]
        assert split.n_trials == SIZES[split.name]
        assert split.encod.dtype == torch.float32 and split.recon.dtype == torch.float32
        np.testing.assert_array_equal(split.encod.numpy(), full[:, :7, :4])
        np.testing.assert_array_equal(split.recon.numpy(), full)
        np.testing.assert_allclose(split.ext_input.numpy(), arrays[f"{split.name}_ext_input"], rtol=1e-6)
        np.testing.assert_allclose(split.truth.numpy(), arrays[f"{split.name}_truth"] / 100.0, rtol=1e-6)
        assert split.inds.dtype == np.int64
        np.testing.assert_array_equal(split.inds, arrays[f"{split.name}_inds"])


def test_single_layout_minimal_file_gets_defaults(tmp_path: Path) -> None:
    arrays = single_arrays()
    path = write(tmp_path, {key: arrays[key] for key in ("train_data", "valid_data", "train_truth", "valid_truth")})
    data = load_data(path)

    assert data.test is None and [s.name for s in data.splits] == ["train", "valid"]
    assert (data.cs_dim, data.fp_len, data.ext_input_dim, data.conversion_factor) == (0, 0, 0, None)
    assert data.train.ext_input is None
    assert torch.equal(data.train.encod, data.train.recon)
    np.testing.assert_array_equal(data.valid.inds, np.arange(N_VALID))
    # Without conversion_factor the truth is already counts per bin.
    np.testing.assert_allclose(data.train.truth.numpy(), arrays["train_truth"], rtol=1e-6)


def test_conversion_factor_may_be_a_file_attribute(tmp_path: Path) -> None:
    arrays = single_arrays()
    del arrays["conversion_factor"]
    data = load_data(write(tmp_path, arrays, attrs={"conversion_factor": 1000.0 / 5}))
    assert data.conversion_factor == 200.0
    np.testing.assert_allclose(data.valid.truth.numpy(), arrays["valid_truth"] / 200.0, rtol=1e-6)


def test_encod_recon_round_trip(tmp_path: Path) -> None:
    arrays = encod_recon_arrays()
    path = write(tmp_path, arrays)
    data = load_data(path, cs_dim=2, fp_len=3)  # agrees with the file

    assert data.layout == "encod_recon"
    assert (data.encod_dim, data.recon_dim, data.cs_dim) == (4, 6, 2)
    assert (data.encod_seq_len, data.recon_seq_len, data.fp_len) == (7, 10, 3)
    assert not data.has_truth and data.ext_input_dim == INPUTS
    assert data.test is not None and data.test.recon is None and data.test.n_trials == N_TEST
    for split in data.splits:
        np.testing.assert_array_equal(split.encod.numpy(), arrays[f"{split.name}_encod_data"])
        if split.recon is not None:
            np.testing.assert_array_equal(split.recon.numpy(), arrays[f"{split.name}_recon_data"])
    assert load_data(path).cs_dim == 2  # zero means "take it from the file"


def test_encod_recon_test_split_with_targets(tmp_path: Path) -> None:
    arrays = encod_recon_arrays()
    arrays["test_recon_data"] = _counts(np.random.default_rng(1), N_TEST)
    data = load_data(write(tmp_path, arrays))
    np.testing.assert_array_equal(data.test.recon.numpy(), arrays["test_recon_data"])


def test_gaussian_accepts_continuous_values_poisson_does_not(tmp_path: Path) -> None:
    arrays = single_arrays()
    arrays["train_data"] = np.random.default_rng(2).normal(size=(N_TRAIN, BINS, NEURONS))
    path = write(tmp_path, arrays)
    data = load_data(path, reconstruction="gaussian")
    np.testing.assert_allclose(data.train.recon.numpy(), arrays["train_data"], rtol=1e-6)
    with pytest.raises(DataError, match="non-negative integer spike counts"):
        load_data(path)


@pytest.mark.parametrize(
    ("reconstruction", "bad_value", "expected"),
    [("gamma", 0.0, "positive values"), ("zig", -0.5, "non-negative values")],
)
def test_continuous_distributions_check_their_support(
    tmp_path: Path, reconstruction: str, bad_value: float, expected: str
) -> None:
    arrays = single_arrays()
    for name in SIZES:
        arrays[f"{name}_data"] = arrays[f"{name}_data"] + 0.5
    arrays["valid_data"][1, 2, 3] = bad_value
    with pytest.raises(DataError, match=expected) as info:
        load_data(write(tmp_path, arrays), reconstruction=reconstruction)
    assert "valid_data[1, 2, 3]" in str(info.value)


def test_unknown_reconstruction_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="possion"):
        load_data(write(tmp_path, single_arrays()), reconstruction="possion")


# --- finding the file in a directory ---


def test_directory_lookup_by_prefix(tmp_path: Path) -> None:
    arrays = single_arrays()
    for name in ("lorenz_a.h5", "maze.hdf5"):
        write(tmp_path, arrays, name)
    (tmp_path / "lorenz_notes.txt").write_text("not data")

    assert find_data_file(tmp_path, "maze") == tmp_path / "maze.hdf5"
    assert load_data(tmp_path, prefix="lorenz").path == tmp_path / "lorenz_a.h5"

    with pytest.raises(DataError, match="several sessions") as info:
        load_data(tmp_path)
    assert "lorenz_a.h5" in str(info.value) and "maze.hdf5" in str(info.value)

    with pytest.raises(DataError, match="'mc_rtt'") as info:
        load_data(tmp_path, prefix="mc_rtt")
    assert "lorenz_notes.txt" in str(info.value)  # says what the directory does hold


# --- bad inputs: each gives a DataError naming the file, the key and what is wrong ---


def _set(key: str, value: Callable[[dict], object]) -> Callable[[dict], None]:
    def mutate(arrays: dict) -> None:
        arrays[key] = value(arrays)

    return mutate


def _delete(key: str) -> Callable[[dict], None]:
    return lambda arrays: arrays.pop(key)


def _poke(key: str, index: tuple, value: float) -> Callable[[dict], None]:
    def mutate(arrays: dict) -> None:
        arrays[key] = arrays[key].astype(np.float64)
        arrays[key][index] = value

    return mutate


def _poke_many(key: str, value: float, count: int) -> Callable[[dict], None]:
    def mutate(arrays: dict) -> None:
        arrays[key] = arrays[key].astype(np.float64)
        arrays[key].reshape(-1)[:count] = value

    return mutate


SINGLE_LAYOUT_ERRORS = {
    "missing valid_data": (_delete("valid_data"), ["'valid_data'", "missing"]),
    "2-D train_data": (_set("train_data", lambda a: a["train_data"][:, :, 0]), ["'train_data'", "2-D", "3-D"]),
    "4-D valid_data": (_set("valid_data", lambda a: a["valid_data"][..., None]), ["'valid_data'", "4-D"]),
    "valid neurons differ": (_set("valid_data", lambda a: a["valid_data"][:, :, :5]), ["'valid_data'", "5 neurons"]),
    "test bins differ": (_set("test_data", lambda a: a["test_data"][:, :8]), ["'test_data'", "8 time bins"]),
    "NaN counts": (_poke_many("train_data", np.nan, 3), ["'train_data'", "3 NaN"]),
    "Inf truth": (_poke_many("valid_truth", np.inf, 2), ["'valid_truth'", "2 NaN or infinite"]),
    "NaN ext_input": (_poke_many("test_ext_input", np.nan, 1), ["'test_ext_input'", "1 NaN"]),
    "empty train": (_set("train_data", lambda a: a["train_data"][:0]), ["'train_data'", "0 trials"]),
    "no neurons": (_set("valid_data", lambda a: a["valid_data"][:, :, :0]), ["'valid_data'", "empty"]),
    "negative count": (_poke("train_data", (2, 3, 4), -1), ["'train_data'", "train_data[2, 3, 4] = -1.0", "1 entries"]),
    "fractional count": (_poke("valid_data", (0, 1, 2), 1.5), ["'valid_data'", "valid_data[0, 1, 2] = 1.5"]),
    "string data": (_set("train_data", lambda a: np.array(["a", "b"])), ["'train_data'", "dtype"]),
    "ext_input bins": (
        _set("train_ext_input", lambda a: a["train_ext_input"][:, :9]),
        ["'train_ext_input'", "10 bins"],
    ),
    "ext_input trials": (
        _set("valid_ext_input", lambda a: a["valid_ext_input"][:3]),
        ["'valid_ext_input'", "4 trials"],
    ),
    "ext_input width": (_set("test_ext_input", lambda a: a["test_ext_input"][:, :, :1]), ["test_ext_input: 1 inputs"]),
    "ext_input missing": (_delete("valid_ext_input"), ["valid_ext_input: missing", "every split"]),
    "truth shape": (_set("train_truth", lambda a: a["train_truth"][:, :, :5]), ["'train_truth'", "(12, 10, 6)"]),
    "inds length": (_set("valid_inds", lambda a: a["valid_inds"][:3]), ["'valid_inds'", "3 entries", "4 trials"]),
    "fractional inds": (_set("train_inds", lambda a: a["train_inds"] + 0.5), ["'train_inds'", "integer"]),
    "2-D inds": (_set("train_inds", lambda a: a["train_inds"][:, None]), ["'train_inds'", "2-D"]),
    "zero conversion_factor": (_set("conversion_factor", lambda a: 0.0), ["'conversion_factor'", "positive"]),
    "vector conversion_factor": (
        _set("conversion_factor", lambda a: np.ones(2)),
        ["'conversion_factor'", "[1.0, 1.0]"],
    ),
}


@pytest.mark.parametrize("case", SINGLE_LAYOUT_ERRORS, ids=str)
def test_single_layout_errors(tmp_path: Path, case: str) -> None:
    mutate, expected = SINGLE_LAYOUT_ERRORS[case]
    arrays = single_arrays()
    mutate(arrays)
    path = write(tmp_path, arrays)
    with pytest.raises(DataError) as info:
        load_data(path, cs_dim=1, fp_len=1)
    message = str(info.value)
    assert str(path) in message
    for text in expected:
        assert text in message


ENCOD_RECON_ERRORS = {
    "missing valid_recon_data": (_delete("valid_recon_data"), ["'valid_recon_data'", "missing"]),
    "trial counts differ": (
        _set("train_recon_data", lambda a: a["train_recon_data"][:5]),
        ["'train_encod_data' has 12 trials", "'train_recon_data' has 5"],
    ),
    "encod wider than recon": (
        _set("train_recon_data", lambda a: a["train_recon_data"][:, :, :3]),
        ["train_encod_data", "leading bins and neurons"],
    ),
    "valid encod neurons differ": (
        _set("valid_encod_data", lambda a: a["valid_encod_data"][:, :, :2]),
        ["'valid_encod_data'", "'train_encod_data'"],
    ),
    "test recon without test encod": (
        lambda a: a.update(test_recon_data=a.pop("test_encod_data")),
        ["'test_recon_data' is present", "'test_encod_data' is missing"],
    ),
    "test ext_input bins": (
        _set("test_ext_input", lambda a: a["test_ext_input"][:, :7]),
        ["'test_ext_input'", "10 bins"],
    ),
    "negative recon count": (_poke("valid_recon_data", (0, 9, 5), -2), ["valid_recon_data[0, 9, 5] = -2.0"]),
}


@pytest.mark.parametrize("case", ENCOD_RECON_ERRORS, ids=str)
def test_encod_recon_errors(tmp_path: Path, case: str) -> None:
    mutate, expected = ENCOD_RECON_ERRORS[case]
    arrays = encod_recon_arrays()
    mutate(arrays)
    path = write(tmp_path, arrays)
    with pytest.raises(DataError) as info:
        load_data(path)
    message = str(info.value)
    assert str(path) in message
    for text in expected:
        assert text in message


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"cs_dim": 3}, ["cs_dim=3", "imply cs_dim=2"]),
        ({"fp_len": 1}, ["fp_len=1", "imply fp_len=3"]),
    ],
)
def test_encod_recon_rejects_split_sizes_the_file_contradicts(tmp_path: Path, kwargs: dict, expected: list) -> None:
    path = write(tmp_path, encod_recon_arrays())
    with pytest.raises(DataError) as info:
        load_data(path, **kwargs)
    assert all(text in str(info.value) for text in [str(path), *expected])


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"cs_dim": NEURONS}, ["cs_dim=6", "6 neurons"]),
        ({"fp_len": BINS}, ["fp_len=10", "10 time bins"]),
        ({"cs_dim": -1}, ["cs_dim must be >= 0", "-1"]),
        ({"fp_len": -2}, ["fp_len must be >= 0", "-2"]),
    ],
)
def test_single_layout_rejects_impossible_splits(tmp_path: Path, kwargs: dict, expected: list) -> None:
    path = write(tmp_path, single_arrays())
    with pytest.raises(DataError) as info:
        load_data(path, **kwargs)
    assert all(text in str(info.value) for text in [str(path), *expected])


def test_file_with_neither_layout_lists_its_keys(tmp_path: Path) -> None:
    path = write(tmp_path, {"spikes": np.zeros((2, 3, 4)), "behavior": np.zeros(2)})
    with pytest.raises(DataError, match="not an LFADS data file") as info:
        load_data(path)
    assert str(path) in str(info.value) and "behavior, spikes" in str(info.value)


def test_group_where_a_dataset_is_expected(tmp_path: Path) -> None:
    arrays = single_arrays()
    arrays["valid_data/inner"] = arrays.pop("valid_data")
    with pytest.raises(DataError, match="'valid_data' is a group"):
        load_data(write(tmp_path, arrays))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        load_data(tmp_path / "nope.h5")
    assert "nope.h5" in str(info.value)


def test_truncated_file(tmp_path: Path) -> None:
    path = write(tmp_path, single_arrays())
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match="truncated") as info:
        load_data(path)
    assert str(path) in str(info.value)


def test_file_that_is_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "data.h5"
    path.write_text("train_data,valid_data\n1,2\n")
    with pytest.raises(DataError, match="cannot open as HDF5") as info:
        load_data(path)
    assert str(path) in str(info.value)


# --- atomic writing ---


def test_write_creates_parents_and_stores_every_kind_of_value(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "out.h5"
    arrays = {"rates": np.arange(12.0).reshape(2, 3, 2), "n": 7, "scale": 0.5, "label": "lorenz", "group/x": np.ones(2)}
    assert write_lfads_h5(path, arrays, {"seed": 3, "kind": "test"}, compression=True) == path
    with h5py.File(path, "r") as h5:
        np.testing.assert_array_equal(h5["rates"][()], arrays["rates"])
        assert h5["rates"].compression == "gzip"
        assert (h5["n"][()], h5["scale"][()], h5["label"][()]) == (7, 0.5, b"lorenz")
        np.testing.assert_array_equal(h5["group/x"][()], np.ones(2))
        assert (h5.attrs["seed"], h5.attrs["kind"]) == (3, "test")
    assert os.listdir(path.parent) == ["out.h5"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = write(tmp_path, single_arrays())
    before = path.read_bytes()
    unstorable = np.array([object(), object()], dtype=object)
    with pytest.raises(TypeError):
        write_lfads_h5(path, {"train_data": np.zeros((2, 2, 2)), "bad": unstorable})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["data.h5"]
    load_data(path)  # still a good file


def test_failed_rename_is_a_data_error_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(DataError, match="cannot write") as info:
        write_lfads_h5(tmp_path / "new.h5", {"x": np.zeros(3)})
    assert "new.h5" in str(info.value)
    assert os.listdir(tmp_path) == []
