"""Binning spike times into trials: the one core of `data nwb` and `data spikes`.

Bins are half-open, [edge_k, edge_k+1): a spike exactly on an edge counts in the later bin. Times are seconds.
A bin outside a unit's observed intervals is missing (NaN), never an empty count.
"""

from __future__ import annotations

import numpy as np

EDGE_TOLERANCE = 1e-9  # seconds: edges computed as start + k * width may miss an interval's end by rounding
DECIMALS = 9  # times and edges are compared rounded to the nanosecond, so float noise in align + k * width
# (1.85 - 0.25 = 1.6000000000000001) cannot move a spike that lies on an edge into the earlier bin


def bin_edges(starts: np.ndarray, bin_s: float, n_bins: int) -> np.ndarray:
    """Edges of `n_bins` bins from each start: trials x (n_bins + 1)."""
    return np.round(np.asarray(starts, dtype=np.float64)[:, None] + bin_s * np.arange(n_bins + 1), DECIMALS)


def bin_spikes(
    spike_times: list[np.ndarray], edges: np.ndarray, observed: list[np.ndarray | None] | None = None
) -> np.ndarray:
    """Spike counts, trials x bins x units (float64, NaN where a bin is not wholly inside the unit's observed
    intervals). spike_times[u]: unit u's spike times; observed[u]: its (k, 2) observed intervals, None: all."""
    n_trials, n_bins = edges.shape[0], edges.shape[1] - 1
    counts = np.empty((n_trials, n_bins, len(spike_times)))
    for unit, times in enumerate(spike_times):
        times = np.sort(np.round(np.asarray(times, dtype=np.float64), DECIMALS))
        counts[:, :, unit] = np.diff(np.searchsorted(times, edges, side="left"), axis=1)
        if observed is not None and observed[unit] is not None:
            counts[:, :, unit][~bins_observed(edges, observed[unit])] = np.nan
    return counts


def bins_observed(edges: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """trials x bins: whether each bin lies wholly inside one of the (k, 2) intervals."""
    intervals = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    intervals = intervals[np.argsort(intervals[:, 0])]
    left, right = edges[:, :-1], edges[:, 1:]
    last = (
        np.searchsorted(intervals[:, 0], left + EDGE_TOLERANCE, side="right") - 1
    )  # the interval starting at or before
    inside = last >= 0
    stop = intervals[np.clip(last, 0, None), 1]
    return inside & (right <= stop + EDGE_TOLERANCE)


def resample(timestamps: np.ndarray, values: np.ndarray, times: np.ndarray) -> np.ndarray:
    """A time series (samples x channels) linearly interpolated at `times` (any shape); NaN outside its span."""
    values = np.asarray(values, dtype=np.float64).reshape(len(timestamps), -1)
    order = np.argsort(timestamps)
    timestamps, values = np.asarray(timestamps, dtype=np.float64)[order], values[order]
    flat = times.reshape(-1)
    out = np.stack([np.interp(flat, timestamps, values[:, c]) for c in range(values.shape[1])], axis=-1)
    out[(flat < timestamps[0] - EDGE_TOLERANCE) | (flat > timestamps[-1] + EDGE_TOLERANCE)] = np.nan
    return out.reshape(*times.shape, values.shape[1])
