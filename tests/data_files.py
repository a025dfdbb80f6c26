"""Synthetic inputs of the data commands for the data-folder, data-guide and multi-session tests: spike-time
tables as a lab exports them (a spikes CSV and a trials CSV), LFADS files with missing bins, and Lorenz sessions
that share their latents."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from autolfads.data.hdf5 import MISSING_BINS_ATTR, write_lfads_h5
from autolfads.data.synthetic import make_lorenz

TRIALS, UNITS, TRIAL_S, GO_S = 40, 12, 1.0, 0.3  # 40 trials of 1 s, `go` 0.3 s into each; 12 units


def write_spike_tables(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """spikes.csv (unit,time) with about 20 Hz Poisson spikes per unit, and trials.csv (start,stop,go)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    spikes, trials = folder / "spikes.csv", folder / "trials.csv"
    with open(spikes, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["unit", "time"])
        for unit in range(UNITS):
            times = np.sort(rng.uniform(0, TRIALS * TRIAL_S, rng.poisson(20 * TRIALS * TRIAL_S)))
            writer.writerows([unit, f"{t:.5f}"] for t in times)
    with open(trials, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["start", "stop", "go"])
        writer.writerows([i * TRIAL_S, (i + 1) * TRIAL_S, i * TRIAL_S + GO_S] for i in range(TRIALS))
    return spikes, trials


def write_missing_bins_file(path: Path, marked: bool, seed: int = 0) -> tuple[Path, int]:
    """A single-layout LFADS file (24 / 8 trials, 20 bins, 6 neurons) whose every 7th count is NaN; marked:
    with MISSING_BINS_ATTR, as our data commands write it. Returns the path and the NaN count."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, trials in (("train", 24), ("valid", 8)):
        counts = rng.poisson(2.0, (trials, 20, 6)).astype(np.float32)
        counts.reshape(-1)[::7] = np.nan
        arrays[f"{split}_data"] = counts
    attrs = {MISSING_BINS_ATTR: True} if marked else {}
    write_lfads_h5(path, arrays, attrs)
    return path, sum(int(np.isnan(a).sum()) for a in arrays.values())


NEURONS = (12, 9, 15)


def write_sessions(folder: Path, neurons=NEURONS, seq_len: int = 20, drop: tuple[str, ...] = ()) -> Path:
    """Lorenz sessions with the same conditions and latents (same seed), each with its own neurons."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, n in enumerate(neurons):
        arrays = make_lorenz(n_conditions=6, trials_per_condition=5, n_neurons=n, seq_len=seq_len, seed=3)
        write_lfads_h5(folder / f"session_{index}.h5", {k: v for k, v in arrays.items() if k not in drop})
    return folder
