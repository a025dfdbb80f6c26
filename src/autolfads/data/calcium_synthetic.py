"""Calcium-imaging-like synthetic data: Lorenz-driven spikes seen through an indicator, with known truth.

    autolfads data calcium --out data/calcium.h5                    # dF/F, for model.reconstruction gaussian
    autolfads data calcium --out data/events.h5 --signal events     # deconvolved events, for model.reconstruction zig

The spikes are those of `autolfads data lorenz` with the same seed and shared parameters. From them:
- fluorescence: each spike raises the signal by `amplitude` in its own bin and decays exponentially with time
  constant tau_ms; Gaussian noise of std noise_std is added, so the dF/F-like signal can go negative. Trials
  start from baseline 0 (no spikes before the first bin).
- events: each spike adds its own amplitude drawn from Gamma(event_shape, amplitude / event_shape) (mean
  amplitude); a bin holds the sum over its spikes and is exactly 0 where there was no spike. No decay, no noise.

Keys (single layout): {split}_data float32 signal; {split}_truth the expected signal without noise (the same
kernel applied to the expected counts per bin) in the data's units, with conversion_factor 1; {split}_spikes
(counts), {split}_rates_hz (true rates), {split}_latents, {split}_inds and {split}_cond_idx.
The signal's randomness (noise, event amplitudes) comes from a stream spawned from the seed, apart from the spikes'.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from autolfads.data.hdf5 import write_lfads_h5
from autolfads.data.synthetic import make_lorenz
from autolfads.errors import ConfigError

SIGNALS = ("fluorescence", "events")
SPLITS = ("train", "valid")


def make_calcium(
    *,
    signal: str = "fluorescence",
    tau_ms: float = 200.0,
    amplitude: float = 0.2,
    noise_std: float = 0.1,
    event_shape: float = 4.0,
    n_conditions: int = 65,
    trials_per_condition: int = 20,
    n_neurons: int = 29,
    seq_len: int = 50,
    bin_ms: float = 20.0,
    valid_fraction: float = 0.2,
    seed: int = 0,
    min_rate_hz: float = 1.0,
    max_rate_hz: float = 50.0,
) -> dict[str, np.ndarray]:
    """A calcium-like signal from Lorenz-driven spikes: fluorescence (dF/F, gaussian) or deconvolved events (zig).

    fluorescence: spikes convolved with exp(-t / tau_ms), times amplitude, plus N(0, noise_std^2) noise.
    events: per-spike Gamma amplitudes (mean amplitude, shape event_shape), exact zeros without a spike.
    tau_ms and noise_std apply to fluorescence only, event_shape to events only. The spikes and rates are those
    of make_lorenz with the same parameters and seed (see there for the rate parameters).
    """
    _check_signal_params(signal, tau_ms, amplitude, noise_std, event_shape)
    spiking = make_lorenz(
        n_conditions=n_conditions,
        trials_per_condition=trials_per_condition,
        n_neurons=n_neurons,
        seq_len=seq_len,
        bin_ms=bin_ms,
        valid_fraction=valid_fraction,
        seed=seed,
        min_rate_hz=min_rate_hz,
        max_rate_hz=max_rate_hz,
    )
    # Apart from the spikes' stream (make_lorenz uses default_rng(seed)), so both signals share the same spikes.
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    decay = np.exp(-bin_ms / tau_ms)
    arrays: dict[str, np.ndarray] = {"conversion_factor": np.float64(1.0)}  # truth is already in the data's units
    for split in SPLITS:
        spikes = spiking[f"{split}_data"]
        expected_counts = spiking[f"{split}_truth"].astype(np.float64) * (bin_ms / 1000.0)
        if signal == "fluorescence":
            data = amplitude * exponential_filter(spikes, decay) + rng.normal(scale=noise_std, size=spikes.shape)
            truth = amplitude * exponential_filter(expected_counts, decay)
        else:
            # The sum of `count` Gamma(k, theta) amplitudes is Gamma(count * k, theta); shape 0 gives exactly 0.
            data = rng.gamma(shape=spikes * event_shape, scale=amplitude / event_shape)
            truth = amplitude * expected_counts
        arrays[f"{split}_data"] = data.astype(np.float32)
        arrays[f"{split}_truth"] = truth.astype(np.float32)
        arrays[f"{split}_spikes"] = spikes
        arrays[f"{split}_rates_hz"] = spiking[f"{split}_truth"]
        for key in ("latents", "inds", "cond_idx"):
            arrays[f"{split}_{key}"] = spiking[f"{split}_{key}"]
    return arrays


def write_calcium(out: str | Path, **params: object) -> Path:
    """Build make_calcium(**params) and write it to file `out`; the kind and parameters go into its attributes."""
    arrays = make_calcium(**params)
    attrs = {"synthetic_kind": "calcium", "synthetic_params": json.dumps(params, sort_keys=True)}
    return write_lfads_h5(out, arrays, attrs, compression=True)


def exponential_filter(series: np.ndarray, decay: float) -> np.ndarray:
    """Causal filter along axis 1 (time): out[t] = series[t] + decay * out[t - 1], out[-1] = 0.

    This is the convolution with the kernel decay**j (j = 0, 1, ...) truncated at the start of the trial.
    """
    out = np.empty(series.shape, dtype=np.float64)
    level = np.zeros((series.shape[0], *series.shape[2:]))
    for t in range(series.shape[1]):
        level = decay * level + series[:, t]
        out[:, t] = level
    return out


def _check_signal_params(signal: str, tau_ms: float, amplitude: float, noise_std: float, event_shape: float) -> None:
    if signal not in SIGNALS:
        raise ConfigError(f"signal (--signal) must be one of {', '.join(SIGNALS)}; got {signal!r}")
    for name, value in (("tau_ms", tau_ms), ("amplitude", amplitude), ("event_shape", event_shape)):
        if not value > 0:
            raise ConfigError(f"{name} (--{name.replace('_', '-')}) must be > 0, got {value}")
    if not noise_std >= 0:
        raise ConfigError(f"noise_std (--noise-std) must be >= 0, got {noise_std}")
