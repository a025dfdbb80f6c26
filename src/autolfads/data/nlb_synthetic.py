"""A synthetic Neural Latents Benchmark session with known rates: an NWB file in NLB's (mc_maze) layout.

A centre-out reaching task in which motor cortex is a small dynamical system (Churchland et al. 2012):
    - after the target appears, the latent state relaxes to a condition-dependent preparatory state
      (reach angle theta: p = a [cos theta, sin theta, 0.7 cos 2theta, 0.7 sin 2theta]);
    - at movement onset each pair (p_i, r_i) rotates and decays (two planes at 0.8 Hz, two at 1.5 Hz, 500 ms
      decay), and a condition-invariant transient rises and falls;
    - hand velocity is a linear readout of (r_1, r_2), 100 ms after the neurons (NLB's mc_maze lag);
    - each neuron's log-rate is a fixed linear readout of the latents; spikes are Poisson.
Trials differ from their condition's average (reach angle, amplitude and rotation speed vary), so
single-trial inference beats condition averages. Everything runs on a 5 ms clock from t = 0, rates are
constant within a 5 ms bin and every spike lies inside its bin, so the expected count of any 5k-ms bin that
nlb_tools makes is an exact sum of true 5 ms rates.

The truth goes to a side file `<stem>_truth.h5`: latents (5 ms bins x 9), log_rate_weights (units x 9),
log_rate_bias (units, log Hz) and heldout (units), in the NWB units-table order; `true_counts` turns it
into expected counts per 5 ms bin.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from autolfads.data.hdf5 import KIND_ATTR, write_lfads_h5
from autolfads.errors import ConfigError, DataError
from autolfads.files import write_atomic

STEP_S = 0.005  # the generator's clock: latents and rates are constant within each 5 ms bin
TRIAL_S = 1.2  # every trial: target at 100 ms, movement onset 400-500 ms, end 1200 ms
LAG_S = 0.1  # hand velocity follows the neural state by 100 ms
N_LATENTS = 9  # 4 preparatory/rotational pairs (p_i, r_i) and one condition-invariant dimension
SYNTHETIC_DESCRIPTION = "autolfads synthetic NLB session (mc_maze layout)"  # data nlb skips NLB's neuron counts for it


def truth_path(nwb_path: str | Path) -> Path:
    """Where the true rates of a synthetic NWB file are kept."""
    path = Path(nwb_path)
    return path.with_name(f"{path.stem}_truth.h5")


def write_nlb_synthetic(
    path: str | Path,
    *,
    seed: int = 0,
    conditions: int = 8,
    trials_per_condition: int = 24,
    heldin: int = 45,
    heldout: int = 15,
) -> tuple[Path, Path]:
    """Write the NWB file and its truth side file, both atomically. Returns (nwb path, truth path).

    Per condition, 15% of the trials go to `val`, 15% to `test` (at least one each) and the rest to `train`.
    """
    for name, value, least in (
        ("conditions", conditions, 2),
        ("trials_per_condition", trials_per_condition, 4),
        ("heldin", heldin, 2),
        ("heldout", heldout, 1),
    ):
        if value < least:
            raise ConfigError(f"nlb-synthetic: {name} must be >= {least}, got {value}")
    path = Path(path)
    if path.suffix != ".nwb":
        raise ConfigError(f"nlb-synthetic: the output file must end in .nwb, got {path}")
    rng = np.random.default_rng(seed)
    session = _simulate(rng, conditions, trials_per_condition, heldin + heldout)
    heldout_mask = np.zeros(heldin + heldout, dtype=bool)
    heldout_mask[rng.choice(heldin + heldout, heldout, replace=False)] = True  # scattered, as in NLB's files
    _write_nwb(path, session, heldout_mask, rng, seed)
    truth = write_lfads_h5(
        truth_path(path),
        {
            "latents": session["latents"],
            "log_rate_weights": session["weights"],
            "log_rate_bias": session["bias"],
            "heldout": heldout_mask,
        },
        attrs={
            KIND_ATTR: "truth",
            "bin_ms": 5,
            "description": "true rates: exp(log_rate_bias + latents @ log_rate_weights.T) Hz",
            "nwb_file": path.name,
            "seed": seed,
        },
        compression=True,
    )
    return path, truth


def true_counts(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The truth side file -> (expected counts per 5 ms bin (bins x units, units-table order), heldout mask)."""
    try:
        with h5py.File(path, "r") as h5:
            latents, weights, bias = h5["latents"][()], h5["log_rate_weights"][()], h5["log_rate_bias"][()]
            heldout = h5["heldout"][()].astype(bool)
    except (OSError, KeyError) as err:
        raise DataError(f"{path}: not a truth file written by `autolfads data nlb-synthetic`: {err}") from None
    return np.exp(bias + latents @ weights.T) * STEP_S, heldout


def _simulate(rng: np.random.Generator, conditions: int, per_condition: int, n_units: int) -> dict:
    steps = round(TRIAL_S / STEP_S)
    order = rng.permutation(np.repeat(np.arange(conditions), per_condition))
    n_trials = order.size
    latents = np.zeros((n_trials * steps, N_LATENTS))
    onsets = np.zeros(n_trials, dtype=int)  # in 5 ms steps from the session start
    theta0 = 2 * np.pi * np.arange(conditions) / conditions
    for trial, condition in enumerate(order):
        theta = theta0[condition] + rng.normal(0, 0.08)
        amplitude = 1.0 + rng.normal(0, 0.12)
        speed = 1.0 + rng.normal(0, 0.1)
        onset = 80 + int(rng.integers(0, 21))  # 400-500 ms
        onsets[trial] = trial * steps + onset
        latents[trial * steps : (trial + 1) * steps] = _trial_latents(theta, amplitude, speed, onset, steps)

    # Log-rates: a baseline of 4-25 Hz and a random readout whose modulation is about +-0.6 (a factor of ~2).
    weights = rng.normal(0, 0.45, size=(n_units, N_LATENTS))
    weights[:, -1] = np.abs(weights[:, -1]) + 0.3  # the condition-invariant transient excites most neurons
    bias = np.log(rng.uniform(4, 25, size=n_units))
    counts = rng.poisson(np.exp(bias + latents @ weights.T) * STEP_S)

    # Velocity (mm/s) at time t is read out from (r_1, r_2) at t - 100 ms, plus a little measurement noise.
    lag = round(LAG_S / STEP_S)
    velocity = np.zeros((latents.shape[0], 2))
    velocity[lag:] = 350.0 * latents[:-lag, 4:6]
    velocity += rng.normal(0, 20.0, size=velocity.shape)
    split = _splits(order, conditions, rng)
    return {
        "latents": latents,
        "weights": weights,
        "bias": bias,
        "counts": counts,
        "velocity": velocity,
        "order": order,
        "onsets": onsets,
        "split": split,
        "steps": steps,
    }


def _trial_latents(theta: float, amplitude: float, speed: float, onset: int, steps: int) -> np.ndarray:
    """Latents of one trial (steps x 9): columns p_1..p_4, r_1..r_4, condition-invariant."""
    z = np.zeros((steps, N_LATENTS))
    target = round(0.1 / STEP_S)
    prep = amplitude * np.array([np.cos(theta), np.sin(theta), 0.7 * np.cos(2 * theta), 0.7 * np.sin(2 * theta)])
    relax = STEP_S / 0.06  # preparatory state reached with a 60 ms time constant
    p = np.zeros(4)
    for t in range(target, onset):
        p = p + relax * (prep - p)
        z[t, :4] = p
    # Each (p_i, r_i) pair rotates at omega_i and decays with 500 ms: exact one-step propagator.
    omega = 2 * np.pi * speed * np.array([0.8, 0.8, 1.5, 1.5])
    decay = np.exp(-STEP_S / 0.5)
    cos, sin = np.cos(omega * STEP_S) * decay, np.sin(omega * STEP_S) * decay
    r = np.zeros(4)
    for t in range(onset, steps):
        p, r = cos * p - sin * r, sin * p + cos * r
        since = (t - onset + 1) * STEP_S
        z[t, :4], z[t, 4:8] = p, r
        z[t, 8] = 1.2 * (since / 0.2) * np.exp(1 - since / 0.2)
    return z


def _splits(order: np.ndarray, conditions: int, rng: np.random.Generator) -> np.ndarray:
    split = np.full(order.size, "train", dtype=object)
    for condition in range(conditions):
        trials = rng.permutation(np.flatnonzero(order == condition))
        n_held = max(1, round(0.15 * trials.size))
        split[trials[:n_held]] = "val"
        split[trials[n_held : 2 * n_held]] = "test"
    return split


def _write_nwb(path: Path, session: dict, heldout: np.ndarray, rng: np.random.Generator, seed: int) -> None:
    from pynwb import NWBHDF5IO, NWBFile

    nwb = NWBFile(
        session_description=SYNTHETIC_DESCRIPTION,
        identifier=f"autolfads-nlb-synthetic-seed{seed}",
        session_start_time=datetime(2021, 1, 1, tzinfo=timezone.utc),
    )
    _add_units(nwb, session, heldout, rng)
    _add_trials(nwb, session)
    _add_behavior(nwb, session)

    def write(tmp: Path) -> None:
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)

    try:
        write_atomic(path, write, tmp_suffix=".tmp.nwb", mkdir=True)  # pynwb warns about other suffixes
    except OSError as err:
        raise DataError(f"cannot write {path}: {err}") from None


def _add_units(nwb, session: dict, heldout: np.ndarray, rng: np.random.Generator) -> None:
    end_s = session["latents"].shape[0] * STEP_S
    nwb.add_unit_column(name="heldout", description="held out from model input (co-smoothing targets)")
    for unit in range(session["counts"].shape[1]):
        nwb.add_unit(
            spike_times=_spike_times(session["counts"][:, unit], rng),
            obs_intervals=[[0.0, end_s]],
            heldout=bool(heldout[unit]),
        )


def _add_trials(nwb, session: dict) -> None:
    columns = {
        "split": "train, val or test",
        "target_on_time": "target appears (s)",
        "move_onset_time": "movement onset (s)",
        "trial_type": "reach direction (condition)",
        "trial_version": "maze version (always 0)",
    }
    for name, description in columns.items():
        nwb.add_trial_column(name=name, description=description)
    steps = session["steps"]
    for trial, condition in enumerate(session["order"]):
        start = trial * steps * STEP_S
        nwb.add_trial(
            start_time=start,
            stop_time=start + TRIAL_S,
            split=str(session["split"][trial]),
            target_on_time=start + 0.1,
            move_onset_time=round(session["onsets"][trial] * STEP_S, 6),
            trial_type=int(condition),
            trial_version=0,
        )


def _add_behavior(nwb, session: dict) -> None:
    """NLB keeps behaviour at 1 kHz: the 5 ms velocity, linearly interpolated."""
    from pynwb import TimeSeries

    end_s = session["latents"].shape[0] * STEP_S
    ms = np.arange(round(end_s * 1000)) / 1000.0
    grid = np.arange(session["velocity"].shape[0]) * STEP_S
    velocity = np.stack([np.interp(ms, grid, session["velocity"][:, i]) for i in range(2)], axis=1)
    behavior = nwb.create_processing_module(name="behavior", description="hand kinematics")
    behavior.add(
        TimeSeries(
            name="hand_vel",
            data=velocity.astype(np.float32),
            unit="mm/s",
            rate=1000.0,
            starting_time=0.0,
            comments="columns=[x,y]",
            description="hand velocity",
        )
    )


def _spike_times(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Spikes of each 5 ms bin placed at random whole milliseconds + 0.5 ms inside it: binning at 1 ms
    (as nlb_tools does) can never move a spike into a neighbouring bin."""
    bins = np.repeat(np.arange(counts.size), counts)
    ms = 5 * bins + rng.integers(0, 5, size=bins.size) + 0.5
    return np.sort(ms) / 1000.0
