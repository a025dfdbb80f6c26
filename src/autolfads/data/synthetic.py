"""Synthetic spiking data sets with known rates, for checking that a model recovers the truth.

Each generator returns single-layout arrays: train_data / valid_data (int32 counts, trials x time x neurons),
train_truth / valid_truth (true rates in Hz), conversion_factor (1000 / bin_ms, so truth / conversion_factor
is counts per bin), *_inds (global trial numbers), *_latents (the true latent state) and *_cond_idx.
Every trial of a condition shares the same rates; the spikes are independent Poisson draws.
Results depend only on the arguments: all randomness comes from np.random.default_rng(seed).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from autolfads.data.hdf5 import write_lfads_h5
from autolfads.errors import ConfigError


def make_lorenz(
    *,
    n_conditions: int = 65,
    trials_per_condition: int = 20,
    n_neurons: int = 29,
    seq_len: int = 50,
    bin_ms: float = 20.0,
    valid_fraction: float = 0.2,
    seed: int = 0,
    min_rate_hz: float = 1.0,
    max_rate_hz: float = 200.0,
    time_per_bin: float = 0.015,
    substeps: int = 6,
    burn_in: float = 5.0,
) -> dict[str, np.ndarray]:
    """Spikes driven by the Lorenz system (sigma 10, rho 28, beta 8/3), one attractor state per condition.

    The state is integrated with RK4 (`substeps` steps per bin, `time_per_bin` Lorenz time units per bin,
    so the default 50 bins cover about one loop of the attractor) after `burn_in` time units that bring a
    random start onto the attractor. Latents are z-scored; each neuron's log-rate is a random projection
    of them, scaled and offset so that over the data set it spans exactly log(min_rate_hz)..log(max_rate_hz):
    rates never explode, and the defaults give a mean near 25 Hz and about 0.5 counts per 20 ms bin.
    """
    _check_sizes(n_conditions, trials_per_condition, n_neurons, seq_len, bin_ms, valid_fraction)
    check_rate_range(min_rate_hz, max_rate_hz)
    rng = np.random.default_rng(seed)
    latents = lorenz_latents(rng, n_conditions, seq_len, time_per_bin=time_per_bin, substeps=substeps, burn_in=burn_in)
    rates_hz = lorenz_rates(rng, latents, n_neurons, min_rate_hz, max_rate_hz)
    return _trials(rates_hz, latents, trials_per_condition, bin_ms, valid_fraction, rng)


def make_chaotic_rnn(
    *,
    n_conditions: int = 400,
    trials_per_condition: int = 10,
    n_neurons: int = 50,
    seq_len: int = 100,
    gamma: float = 2.5,
    tau_s: float = 0.025,
    bin_ms: float = 10.0,
    max_rate_hz: float = 30.0,
    valid_fraction: float = 0.2,
    seed: int = 0,
    substeps: int = 10,
    x0_std: float = 1.0,
) -> dict[str, np.ndarray]:
    """Spikes from the LFADS paper's chaotic RNN: x' = (-x + gamma * J @ tanh(x)) / tau, J ~ N(0, 1/N).

    Chaotic for gamma > 1. Euler steps of bin_ms / substeps (1 ms by default, well under tau); one random
    initial state x0 ~ N(0, x0_std^2) per condition; each unit drives one neuron at
    rate = max_rate_hz * (tanh(x) + 1) / 2. Latents are the RNN state x.
    """
    _check_sizes(n_conditions, trials_per_condition, n_neurons, seq_len, bin_ms, valid_fraction)
    rng = np.random.default_rng(seed)
    coupling = rng.normal(scale=1.0 / np.sqrt(n_neurons), size=(n_neurons, n_neurons))
    dt_over_tau = bin_ms / 1000.0 / substeps / tau_s

    def step(x: np.ndarray) -> np.ndarray:
        return x + dt_over_tau * (-x + gamma * np.tanh(x) @ coupling.T)

    start = rng.normal(scale=x0_std, size=(n_conditions, n_neurons))
    latents = _sample_trajectory(step, start, seq_len, substeps)
    rates = max_rate_hz * (np.tanh(latents) + 1.0) / 2.0
    return _trials(rates, latents, trials_per_condition, bin_ms, valid_fraction, rng)


SYNTHETIC_SETS: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    "lorenz": make_lorenz,
    "chaotic-rnn": make_chaotic_rnn,
}


def write_synthetic(kind: str, out: str | Path, **params: object) -> Path:
    """Build synthetic set `kind` with `params` and write it to file `out` (single layout, with truth).

    The kind and the parameters passed are stored as file attributes so the file documents itself.
    """
    if kind not in SYNTHETIC_SETS:
        raise ConfigError(f"unknown synthetic data set {kind!r}; expected one of {', '.join(SYNTHETIC_SETS)}")
    arrays = SYNTHETIC_SETS[kind](**params)
    attrs = {"synthetic_kind": kind, "synthetic_params": json.dumps(params, sort_keys=True)}
    return write_lfads_h5(out, arrays, attrs, compression=True)


def check_rate_range(min_rate_hz: float, max_rate_hz: float) -> None:
    if not 0 < min_rate_hz < max_rate_hz:
        raise ConfigError(f"need 0 < min_rate_hz < max_rate_hz, got {min_rate_hz} and {max_rate_hz}")


def lorenz_latents(
    rng: np.random.Generator, n_conditions: int, seq_len: int, *, time_per_bin: float, substeps: int, burn_in: float
) -> np.ndarray:
    """Z-scored Lorenz states (conditions, seq_len, 3): one random start per condition, burnt in onto the attractor."""
    dt = time_per_bin / substeps

    def step(state: np.ndarray) -> np.ndarray:
        return _rk4_step(_lorenz_velocity, state, dt)

    start = rng.normal(loc=(0.0, 0.0, 25.0), scale=10.0, size=(n_conditions, 3))
    for _ in range(round(burn_in / dt)):
        start = step(start)
    return _zscore(_sample_trajectory(step, start, seq_len, substeps))


def lorenz_rates(
    rng: np.random.Generator, latents: np.ndarray, n_neurons: int, min_rate_hz: float, max_rate_hz: float
) -> np.ndarray:
    """Rates in Hz (conditions, time, neurons): each neuron's log-rate is a random projection of the latents,
    scaled so that over all conditions it spans exactly log(min_rate_hz)..log(max_rate_hz)."""
    projection = latents @ rng.normal(size=(latents.shape[-1], n_neurons))
    low, high = projection.min(axis=(0, 1)), projection.max(axis=(0, 1))
    unit = (projection - low) / np.maximum(high - low, 1e-12)  # each neuron spans [0, 1]
    return np.exp(np.log(min_rate_hz) + unit * np.log(max_rate_hz / min_rate_hz))


def _lorenz_velocity(state: np.ndarray, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0) -> np.ndarray:
    x, y, z = state[..., 0], state[..., 1], state[..., 2]
    return np.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], axis=-1)


def _rk4_step(velocity: Callable[[np.ndarray], np.ndarray], state: np.ndarray, dt: float) -> np.ndarray:
    k1 = velocity(state)
    k2 = velocity(state + dt / 2 * k1)
    k3 = velocity(state + dt / 2 * k2)
    k4 = velocity(state + dt * k3)
    return state + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def _sample_trajectory(
    step: Callable[[np.ndarray], np.ndarray], state: np.ndarray, n_bins: int, substeps: int
) -> np.ndarray:
    """States at the start of each bin, (conditions, n_bins, dim), taking `substeps` steps per bin."""
    samples = []
    for _ in range(n_bins):
        samples.append(state)
        for _ in range(substeps):
            state = step(state)
    return np.stack(samples, axis=1)


def _zscore(latents: np.ndarray) -> np.ndarray:
    return (latents - latents.mean(axis=(0, 1))) / latents.std(axis=(0, 1))


def _trials(
    rates_hz: np.ndarray,
    latents: np.ndarray,
    trials_per_condition: int,
    bin_ms: float,
    valid_fraction: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Poisson trials from per-condition rates, split per condition into train and valid, each shuffled.

    Trial i belongs to condition i // trials_per_condition; about valid_fraction of every condition's trials
    go to valid, so both splits cover every condition.
    """
    n_conditions = rates_hz.shape[0]
    n_valid = _n_valid(trials_per_condition, valid_fraction)
    cond_idx = np.repeat(np.arange(n_conditions), trials_per_condition)
    counts = rng.poisson(rates_hz[cond_idx] * (bin_ms / 1000.0)).astype(np.int32)

    local = rng.permuted(np.tile(np.arange(trials_per_condition), (n_conditions, 1)), axis=1)
    trial_ids = np.arange(n_conditions)[:, None] * trials_per_condition + local
    split_inds = {
        "train": rng.permutation(trial_ids[:, n_valid:].ravel()),
        "valid": rng.permutation(trial_ids[:, :n_valid].ravel()),
    }
    arrays: dict[str, np.ndarray] = {"conversion_factor": np.float64(1000.0 / bin_ms)}
    for name, inds in split_inds.items():
        conds = cond_idx[inds]
        arrays[f"{name}_data"] = counts[inds]
        arrays[f"{name}_truth"] = rates_hz[conds].astype(np.float32)
        arrays[f"{name}_latents"] = latents[conds].astype(np.float32)
        arrays[f"{name}_inds"] = inds.astype(np.int64)
        arrays[f"{name}_cond_idx"] = conds.astype(np.int64)
    return arrays


def _n_valid(trials_per_condition: int, valid_fraction: float) -> int:
    n_valid = round(valid_fraction * trials_per_condition)
    if not 1 <= n_valid < trials_per_condition:
        raise ConfigError(
            f"valid_fraction={valid_fraction} of trials_per_condition={trials_per_condition} gives {n_valid} "
            "validation trials per condition; need at least 1 and at least 1 left for training"
        )
    return n_valid


def _check_sizes(
    n_conditions: int, trials_per_condition: int, n_neurons: int, seq_len: int, bin_ms: float, valid_fraction: float
) -> None:
    for name, value in (
        ("n_conditions", n_conditions),
        ("trials_per_condition", trials_per_condition),
        ("n_neurons", n_neurons),
        ("seq_len", seq_len),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if bin_ms <= 0:
        raise ConfigError(f"bin_ms must be > 0, got {bin_ms}")
    _n_valid(trials_per_condition, valid_fraction)
