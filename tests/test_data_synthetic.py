"""Synthetic data sets: determinism, shapes, the train/valid split, rate scales and learnability."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from autolfads.data.dataset import load_data
from autolfads.data.synthetic import SYNTHETIC_SETS, make_chaotic_rnn, make_lorenz, write_synthetic
from autolfads.errors import ConfigError

# Small sets keep every test fast; the learnability check uses the real defaults.
SMALL = {
    "lorenz": {"n_conditions": 6, "trials_per_condition": 10, "n_neurons": 7, "seq_len": 20},
    "chaotic-rnn": {"n_conditions": 6, "trials_per_condition": 10, "n_neurons": 9, "seq_len": 30},
}
LATENT_DIM = {"lorenz": 3, "chaotic-rnn": 9}


def psth_r2(arrays: dict[str, np.ndarray]) -> float:
    """Condition-averaged TRAIN spikes vs true VALID rates (counts/bin); mean over neurons of 1 - SS_res/SS_tot."""
    train, train_cond = arrays["train_data"], arrays["train_cond_idx"]
    psth = {c: train[train_cond == c].mean(axis=0) for c in np.unique(train_cond)}
    truth = arrays["valid_truth"] / arrays["conversion_factor"]
    predicted = np.stack([psth[c] for c in arrays["valid_cond_idx"]])
    ss_res = ((truth - predicted) ** 2).sum(axis=(0, 1))
    ss_tot = ((truth - truth.mean(axis=(0, 1))) ** 2).sum(axis=(0, 1))
    return float(np.mean(1.0 - ss_res / ss_tot))


@pytest.mark.parametrize("kind", SYNTHETIC_SETS)
def test_same_seed_same_data_other_seed_other_data(kind: str) -> None:
    make = SYNTHETIC_SETS[kind]
    first, again, other = make(seed=3, **SMALL[kind]), make(seed=3, **SMALL[kind]), make(seed=4, **SMALL[kind])
    assert first.keys() == again.keys() == other.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    for key in ("train_data", "train_truth", "valid_latents", "train_inds"):
        assert not np.array_equal(first[key], other[key]), key


@pytest.mark.parametrize("kind", SYNTHETIC_SETS)
def test_shapes_dtypes_and_counts(kind: str) -> None:
    size = SMALL[kind]
    arrays = SYNTHETIC_SETS[kind](**size)
    n_train, n_valid = size["n_conditions"] * 8, size["n_conditions"] * 2  # valid_fraction 0.2 of 10
    for name, n in (("train", n_train), ("valid", n_valid)):
        data = arrays[f"{name}_data"]
        assert data.shape == (n, size["seq_len"], size["n_neurons"])
        assert np.issubdtype(data.dtype, np.integer) and data.min() >= 0 and data.max() > 0
        assert arrays[f"{name}_truth"].shape == data.shape and arrays[f"{name}_truth"].dtype == np.float32
        assert arrays[f"{name}_latents"].shape == (n, size["seq_len"], LATENT_DIM[kind])
        assert arrays[f"{name}_inds"].dtype == np.int64 and arrays[f"{name}_cond_idx"].shape == (n,)
    assert float(arrays["conversion_factor"]) == 1000.0 / (20.0 if kind == "lorenz" else 10.0)


@pytest.mark.parametrize("kind", SYNTHETIC_SETS)
def test_every_condition_is_split_between_train_and_valid(kind: str) -> None:
    arrays = SYNTHETIC_SETS[kind](**SMALL[kind])
    n_conditions, per_condition = SMALL[kind]["n_conditions"], SMALL[kind]["trials_per_condition"]
    train_inds, valid_inds = arrays["train_inds"], arrays["valid_inds"]
    np.testing.assert_array_equal(
        np.sort(np.concatenate([train_inds, valid_inds])), np.arange(n_conditions * per_condition)
    )
    for name, per_split in (("train", 8), ("valid", 2)):
        cond = arrays[f"{name}_cond_idx"]
        np.testing.assert_array_equal(cond, arrays[f"{name}_inds"] // per_condition)
        np.testing.assert_array_equal(np.bincount(cond, minlength=n_conditions), per_split)
        # Trials of one condition share rates and latents, and the split order is shuffled.
        first = {c: i for i, c in reversed(list(enumerate(cond)))}
        np.testing.assert_array_equal(arrays[f"{name}_truth"], arrays[f"{name}_truth"][[first[c] for c in cond]])
        np.testing.assert_array_equal(arrays[f"{name}_latents"], arrays[f"{name}_latents"][[first[c] for c in cond]])
    assert not np.array_equal(train_inds, np.sort(train_inds))


@pytest.mark.parametrize("kind", SYNTHETIC_SETS)
def test_written_file_loads_with_truth_in_counts_per_bin(tmp_path: Path, kind: str) -> None:
    path = write_synthetic(kind, tmp_path / "sets" / f"{kind}.h5", seed=5, **SMALL[kind])
    arrays = SYNTHETIC_SETS[kind](seed=5, **SMALL[kind])
    data = load_data(path, cs_dim=2, fp_len=4)  # Poisson checks pass: the counts are integers

    assert data.has_truth and data.conversion_factor == float(arrays["conversion_factor"])
    np.testing.assert_array_equal(data.valid.recon.numpy(), arrays["valid_data"])
    np.testing.assert_array_equal(data.train.inds, arrays["train_inds"])
    truth_per_bin = arrays["train_truth"] / arrays["conversion_factor"]
    np.testing.assert_allclose(data.train.truth.numpy(), truth_per_bin, rtol=1e-6)
    # The counts were drawn at those rates: totals agree within a few Poisson standard deviations.
    expected = truth_per_bin.sum()
    assert abs(arrays["train_data"].sum() - expected) < 5 * np.sqrt(expected)
    with h5py.File(path, "r") as h5:
        assert h5.attrs["synthetic_kind"] == kind
        assert json.loads(h5.attrs["synthetic_params"])["seed"] == 5
        assert "train_latents" in h5 and "valid_cond_idx" in h5


def test_lorenz_rates_stay_in_range_and_latents_are_zscored() -> None:
    arrays = make_lorenz(**SMALL["lorenz"], min_rate_hz=2.0, max_rate_hz=100.0)
    rates = np.concatenate([arrays["train_truth"], arrays["valid_truth"]])
    assert rates.min() == pytest.approx(2.0, rel=1e-5) and rates.max() == pytest.approx(100.0, rel=1e-5)
    # Latents were z-scored per condition; every condition has the same trial count, so trials are z-scored too.
    latents = np.concatenate([arrays["train_latents"], arrays["valid_latents"]])
    np.testing.assert_allclose(latents.mean(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(latents.std(axis=(0, 1)), 1.0, atol=1e-5)


def test_default_lorenz_rates_are_realistic_and_learnable() -> None:
    arrays = make_lorenz()
    assert arrays["train_data"].shape == (65 * 16, 50, 29) and arrays["valid_data"].shape == (65 * 4, 50, 29)
    assert 10.0 < arrays["train_truth"].mean() < 40.0  # Hz
    assert 0.3 < arrays["train_data"].mean() < 1.0  # counts per bin: informative, far from saturating
    assert psth_r2(arrays) > 0.85  # about 0.89 with seed 0


def test_chaotic_rnn_rates_and_chaos() -> None:
    # Chaos needs a reasonably large network (small ones settle on fixed points), so use the default 50 units.
    size = {"n_conditions": 4, "trials_per_condition": 5, "seq_len": 100}
    chaotic = make_chaotic_rnn(**size, max_rate_hz=40.0)
    rates = chaotic["train_truth"]
    assert rates.min() >= 0.0 and rates.max() <= 40.0
    # gamma 2.5: rates keep fluctuating through the second half of the trial (no fixed point reached).
    assert rates[:, 50:].std(axis=1).mean() > 5.0
    # gamma 0.5 (not chaotic): the state decays to x = 0, i.e. every rate to max_rate / 2.
    decaying = make_chaotic_rnn(**size, gamma=0.5)
    assert np.abs(decaying["train_latents"][:, -10:]).max() < 0.01
    np.testing.assert_allclose(decaying["train_truth"][:, -1], 15.0, atol=0.1)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"valid_fraction": 0.0}, "gives 0 validation trials"),
        ({"valid_fraction": 0.99}, "gives 10 validation trials"),
        ({"n_conditions": 0}, "n_conditions must be >= 1"),
        ({"bin_ms": 0.0}, "bin_ms must be > 0"),
    ],
)
def test_bad_parameters_are_config_errors(kwargs: dict, expected: str) -> None:
    params = {**SMALL["chaotic-rnn"], **kwargs}
    with pytest.raises(ConfigError, match=expected):
        make_chaotic_rnn(**params)


def test_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'lorentz'.*lorenz, chaotic-rnn"):
        write_synthetic("lorentz", tmp_path / "x.h5")
    assert not list(tmp_path.iterdir())
