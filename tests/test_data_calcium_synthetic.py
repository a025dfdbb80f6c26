"""data/calcium_synthetic.py: calcium-like synthetic data. Determinism, the signal model (kernel-convolved
spikes plus noise, events), files for their observation models, the `data calcium` command, and fluorescence
trained with a Gaussian model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from autolfads.cli import main
from autolfads.config import Config, apply_overrides
from autolfads.data.calcium_synthetic import make_calcium, write_calcium
from autolfads.data.dataset import load_data
from autolfads.data.synthetic import make_lorenz
from autolfads.errors import ConfigError, DataError

try:
    from conftest import tiny_overrides
except ImportError:  # pytest --import-mode=importlib
    from tests.conftest import tiny_overrides


CALCIUM = {"n_conditions": 6, "trials_per_condition": 5, "n_neurons": 7, "seq_len": 20}


SPLITS = ("train", "valid")


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        return {key: h5[key][()] for key in h5}


# ---------------------------------------------------------------- calcium


@pytest.mark.parametrize("signal", ["fluorescence", "events"])
def test_calcium_same_seed_same_data_other_seed_other_data(signal: str) -> None:
    first, again, other = (make_calcium(signal=signal, seed=seed, **CALCIUM) for seed in (3, 3, 4))
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    for key in ("train_data", "train_truth", "train_spikes", "valid_inds"):
        assert not np.array_equal(first[key], other[key]), key


@pytest.mark.parametrize("signal", ["fluorescence", "events"])
def test_calcium_keys_shapes_and_the_underlying_spikes(signal: str) -> None:
    arrays = make_calcium(signal=signal, seed=2, **CALCIUM)
    lorenz = make_lorenz(seed=2, **CALCIUM, max_rate_hz=50.0)  # the calcium set's default rate range
    assert float(arrays["conversion_factor"]) == 1.0
    for split, n_trials in (("train", 24), ("valid", 6)):
        assert arrays[f"{split}_data"].shape == (n_trials, 20, 7) and arrays[f"{split}_data"].dtype == np.float32
        assert arrays[f"{split}_truth"].shape == (n_trials, 20, 7) and arrays[f"{split}_truth"].dtype == np.float32
        np.testing.assert_array_equal(arrays[f"{split}_spikes"], lorenz[f"{split}_data"])
        np.testing.assert_array_equal(arrays[f"{split}_rates_hz"], lorenz[f"{split}_truth"])
        for key in ("latents", "inds", "cond_idx"):
            np.testing.assert_array_equal(arrays[f"{split}_{key}"], lorenz[f"{split}_{key}"])


def test_fluorescence_is_the_kernel_convolved_spikes_plus_noise() -> None:
    bin_ms, tau_ms, amplitude = 20.0, 150.0, 0.3
    params = {**CALCIUM, "bin_ms": bin_ms, "tau_ms": tau_ms, "amplitude": amplitude, "seed": 1}
    clean = make_calcium(noise_std=0.0, **params)
    kernel = np.exp(-np.arange(20) * bin_ms / tau_ms)
    trial, neuron = 3, 2
    spikes = clean["train_spikes"][trial, :, neuron]
    assert spikes.sum() > 0
    by_hand = amplitude * np.convolve(spikes, kernel)[:20]  # causal, the trial starting from baseline 0
    np.testing.assert_allclose(clean["train_data"][trial, :, neuron], by_hand, rtol=1e-6, atol=1e-7)
    expected_counts = clean["train_rates_hz"][trial, :, neuron].astype(np.float64) * bin_ms / 1000.0
    np.testing.assert_allclose(
        clean["train_truth"][trial, :, neuron], amplitude * np.convolve(expected_counts, kernel)[:20], rtol=1e-5
    )

    noisy = make_calcium(noise_std=0.5, **params)
    np.testing.assert_array_equal(noisy["train_spikes"], clean["train_spikes"])
    np.testing.assert_array_equal(noisy["train_truth"], clean["train_truth"])
    noise = np.concatenate([(noisy[f"{s}_data"] - clean[f"{s}_data"]).ravel() for s in SPLITS])
    assert abs(noise.mean()) < 0.05 and noise.std() == pytest.approx(0.5, rel=0.06)
    assert noisy["train_data"].min() < 0  # dF/F-like: noise takes it below baseline


def test_events_are_zero_exactly_without_spikes_and_scale_with_counts() -> None:
    arrays = make_calcium(signal="events", amplitude=0.5, event_shape=4.0, **{**CALCIUM, "n_conditions": 20})
    for split in SPLITS:
        events, spikes = arrays[f"{split}_data"], arrays[f"{split}_spikes"]
        assert np.array_equal(events == 0, spikes == 0) and events.min() == 0.0
        np.testing.assert_allclose(arrays[f"{split}_truth"], 0.5 * arrays[f"{split}_rates_hz"] * 0.02, rtol=1e-6)
    events, spikes = arrays["train_data"], arrays["train_spikes"]
    assert events.sum() / spikes.sum() == pytest.approx(0.5, rel=0.05)  # mean amplitude per spike


def test_calcium_files_load_for_their_observation_models(tmp_path: Path) -> None:
    fluorescence = write_calcium(tmp_path / "f.h5", seed=4, **CALCIUM)
    arrays = make_calcium(seed=4, **CALCIUM)
    data = load_data(fluorescence, reconstruction="gaussian")
    np.testing.assert_array_equal(data.train.recon.numpy(), arrays["train_data"])
    np.testing.assert_array_equal(data.valid.truth.numpy(), arrays["valid_truth"])  # same units as the data
    with pytest.raises(DataError, match="non-negative integer spike counts"):
        load_data(fluorescence)  # poisson
    with h5py.File(fluorescence, "r") as h5:
        assert h5.attrs["synthetic_kind"] == "calcium" and json.loads(h5.attrs["synthetic_params"])["seed"] == 4
        assert {"train_spikes", "valid_rates_hz", "train_cond_idx", "valid_inds"} <= set(h5)

    events = write_calcium(tmp_path / "e.h5", signal="events", **CALCIUM)
    assert load_data(events, reconstruction="zig").train.recon.min() == 0.0
    with pytest.raises(DataError, match="positive values for gamma.*use model.reconstruction zig"):
        load_data(events, reconstruction="gamma")


def test_calcium_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "calcium" / "events.h5"
    args = [
        "--signal",
        "events",
        "--n-conditions",
        "6",
        "--trials-per-condition",
        "5",
        "--n-neurons",
        "7",
        "--seq-len",
        "20",
        "--seed",
        "9",
    ]
    assert main(["data", "calcium", "--out", str(out), *args]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    np.testing.assert_array_equal(
        read_arrays(out)["train_data"], make_calcium(signal="events", seed=9, **CALCIUM)["train_data"]
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"tau_ms": -100.0}, r"tau_ms \(--tau-ms\) must be > 0, got -100.0"),
        ({"noise_std": -0.1}, r"noise_std \(--noise-std\) must be >= 0"),
        ({"amplitude": 0.0}, r"amplitude \(--amplitude\) must be > 0"),
        ({"event_shape": float("nan")}, r"event_shape \(--event-shape\) must be > 0"),
        ({"signal": "dff"}, r"signal \(--signal\) must be one of fluorescence, events; got 'dff'"),
        ({"n_neurons": 0}, "n_neurons must be >= 1"),
    ],
)
def test_bad_calcium_parameters_are_config_errors(changes: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        make_calcium(**{**CALCIUM, **changes})


def test_fluorescence_trains_with_a_gaussian_model(tmp_path: Path) -> None:
    """A few epochs of a tiny gaussian-observation model on the fluorescence set lower its reconstruction loss."""
    from autolfads.train.run import train

    path = write_calcium(
        tmp_path / "calcium.h5", n_conditions=8, trials_per_condition=5, n_neurons=10, seq_len=20, seed=0
    )
    config = apply_overrides(Config(), [*tiny_overrides(train__max_epochs=8), "model.reconstruction", "gaussian"])
    result = train(config, path, tmp_path / "run", echo=None)
    assert result.epochs == 8
    with open(tmp_path / "run" / "metrics.csv", newline="") as file:
        first, *_, last = csv.DictReader(file)
    for metric in ("loss", "recon", "val_nll_heldin"):
        assert float(last[metric]) < float(first[metric]), metric
