"""A recorded session (spike times, trials, time series) -> the LFADS training file and its targets file.

`data nwb` and `data spikes` read their files into a Recording and call prepare_session. Each trial is cut
at its alignment time: bins cover [align + START_MS, align + END_MS) (the trial bins, which must lie inside the
trial's start and stop times), then --forward-ms more (forward prediction, taken from the recording as it goes
on). The training file is in the encod/recon layout:
    {split}_encod_data      held-in units x trial bins (what the encoders see)
    {split}_recon_data      held-in then held-out units x trial then forward bins
    {split}_inds            the trials' ids (the NWB trials table's ids, or the trials CSV's rows)
    {split}_window_start    each trial's first bin edge in seconds (export-nwb places the results by it)
    {split}_behavior        time series resampled (linearly) to the trial bins' centres, channels concatenated
    {split}_cond_idx        condition of every trial (also as {split}_condition; names in condition_values)
    heldin_units, heldout_units   the units' ids in column order
Bins outside a unit's observed intervals (NWB's obs_intervals; without them: from the first trial's start to
the last trial's stop) are NaN, marked missing in the file: training masks them. The targets file (OUT's name +
_targets.h5) scores the valid trials: held-out units (co-bps), forward bins (fp-bps) and behaviour (vel R2)
in nlb_tools' layout; `evaluate` reports what it lacks as not available.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autolfads.data.binning import bin_edges, bin_spikes, resample
from autolfads.data.hdf5 import MISSING_BINS_ATTR, write_lfads_h5
from autolfads.data.identity import fingerprint
from autolfads.data.nlb_targets import Targets, targets_path, write_targets
from autolfads.errors import ConfigError, DataError

SPLIT_VALUES = {"train": "train", "val": "valid", "valid": "valid", "test": "test", "none": None}  # None: left out
BOOLEAN_TEXT = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
SESSION_DATASET = "session"  # the targets' data set name: not an NLB data set, so only generic metrics apply


@dataclass(frozen=True)
class Recording:
    """What the readers give: spike times in seconds per unit, the trials table as columns, time series."""

    source: str  # the file(s), for messages
    spike_times: list[np.ndarray]
    unit_ids: np.ndarray
    unit_columns: dict[str, np.ndarray] = field(default_factory=dict)
    observed: list[np.ndarray | None] | None = None  # per unit (k, 2) intervals; None: the trials' span
    trials: dict[str, np.ndarray] | None = None  # None: a session without trials
    trial_ids: np.ndarray | None = None
    series: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name -> (timestamps, samples)
    trials_source: str | None = None  # where the trials table came from, if not `source`
    units_source: str | None = None  # where the per-unit columns came from, if not `source` ('': nowhere)
    identifier: str | None = None  # the NWB file's identifier (None: not an NWB file)


@dataclass(frozen=True)
class TrialOptions:
    window_ms: tuple[int, int]
    bin_ms: int
    align: str = "start_time"
    forward_ms: int = 0
    split_column: str | None = None
    valid_fraction: float = 0.2
    heldout_column: str | None = None
    heldout_fraction: float = 0.0
    condition_column: str | None = None
    behavior: tuple[str, ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class SessionFiles:
    data: Path
    targets: Path | None
    summary: str


def check_options(options: TrialOptions) -> tuple[int, int]:
    """The trial and forward bins the options give, or a ConfigError."""
    lo, hi = options.window_ms
    bin_ms = options.bin_ms
    if bin_ms <= 0:
        raise ConfigError(f"--bin-ms must be a positive number of milliseconds, got {bin_ms}")
    if hi <= lo:
        raise ConfigError(f"--window {lo} {hi}: the end must come after the start")
    if bin_ms > hi - lo:
        raise ConfigError(f"--bin-ms {bin_ms} is wider than the {hi - lo} ms window ({lo}..{hi} ms)")
    if (hi - lo) % bin_ms:
        raise ConfigError(f"--bin-ms {bin_ms} does not divide the {hi - lo} ms window ({lo}..{hi} ms) into whole bins")
    if options.forward_ms < 0 or options.forward_ms % bin_ms:
        raise ConfigError(f"--forward-ms {options.forward_ms} must be >= 0 and a whole number of {bin_ms} ms bins")
    for name, value in (("--valid-fraction", options.valid_fraction), ("--heldout-fraction", options.heldout_fraction)):
        if not 0 <= value < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {value}")
    return (hi - lo) // bin_ms, options.forward_ms // bin_ms


def prepare_session(
    recording: Recording, options: TrialOptions, out: str | Path, targets_out: str | Path | None = None
) -> SessionFiles:
    """Write the training file `out` and (when there is something to score) the targets file; see the module
    doc. Every check runs before anything is written."""
    trial_bins, forward_bins = check_options(options)
    out = Path(out)
    targets_out = targets_path(out, targets_out)
    check_units(recording)
    trials, trials_source = recording.trials, recording.trials_source or recording.source
    if trials is None:
        raise DataError(f"{trials_source}: the session has no trials table")
    notes: list[str] = []
    bounds = _trial_bounds(trials, recording.trial_ids, trials_source)
    keep, starts = _trial_starts(recording, options, bounds, trials_source, notes)
    split = _splits(trials, keep, recording.trial_ids, options, trials_source)
    heldout = _heldout_units(recording, options)
    order = np.concatenate([np.flatnonzero(~heldout), np.flatnonzero(heldout)])
    n_heldin = int((~heldout).sum())
    span = np.array([[np.min(bounds[0]), np.max(bounds[1])]])
    binner = _Binner(
        recording=recording,
        order=order,
        observed=recording.observed or [span] * len(order),
        series=[_series(recording, name) for name in options.behavior],
        bin_s=options.bin_ms / 1000,
        bins=(trial_bins, forward_bins),
        n_heldin=n_heldin,
    )
    conditions = _conditions(trials, options.condition_column, trials_source)
    arrays, counts = _binned_splits(binner, split, recording.trial_ids, starts, conditions)
    missing = sum(int(np.isnan(c).sum()) for c in counts.values())
    if missing:
        total = sum(c.size for c in counts.values())
        notes.append(f"{missing} of {total} unit-bins unobserved: NaN, marked missing; training masks them (SBTT)")
    attrs = {
        "source": recording.source,
        "bin_ms": options.bin_ms,
        "align": options.align,
        "window_ms": list(options.window_ms),
        "heldin": n_heldin,
        "heldout": len(order) - n_heldin,
        "trial_bins": trial_bins,
        "forward_bins": forward_bins,
        "behavior": list(options.behavior),
        "seed": options.seed,
        MISSING_BINS_ATTR: True,  # bins outside a unit's obs_intervals are NaN: training masks them
        **identity(recording),
    }
    targets = _targets(arrays, counts, trial_bins, n_heldin, options, out.stem)
    if targets is not None:
        attrs["targets"] = targets_out.name
    write_lfads_h5(out, arrays, attrs=attrs, compression=True)
    if targets is not None:
        write_targets(targets_out, targets)
    summary = _summary(out, arrays, attrs, notes) + (
        f"\n{targets_out}: evaluation targets of the {len(arrays['valid_inds'])} valid trials" if targets else ""
    )
    return SessionFiles(out, targets_out if targets is not None else None, summary)


def _binned_splits(
    binner: _Binner, split: np.ndarray, trial_ids: np.ndarray, starts: np.ndarray, conditions: tuple | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The training file's arrays (units, then split by split) and every split's binned counts."""
    order, n_heldin = binner.order, binner.n_heldin
    arrays: dict[str, np.ndarray] = {
        "heldin_units": binner.recording.unit_ids[order[:n_heldin]],
        "heldout_units": binner.recording.unit_ids[order[n_heldin:]],
    }
    counts: dict[str, np.ndarray] = {}
    for name in ("train", "valid", "test"):
        rows = np.flatnonzero(split == name)
        if not rows.size:
            continue
        counts[name] = binner.add_split(arrays, name, trial_ids[rows], starts[rows])
        if conditions is not None:
            # _cond_idx is what the reader, the report and PCR read-in use; _condition is `data nlb`'s name
            arrays[f"{name}_cond_idx"] = arrays[f"{name}_condition"] = conditions[0][rows]
    if conditions is not None:
        arrays["condition_values"] = conditions[1]
    return arrays, counts


def _trial_starts(
    recording: Recording,
    options: TrialOptions,
    bounds: tuple[np.ndarray, np.ndarray],
    source: str,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Which trials have an alignment time, and every trial's first bin edge (s), its window checked."""
    align = _column(recording.trials, options.align, source, "--align")
    keep = ~np.isnan(align)
    if not keep.any():
        raise DataError(f"{source}: every trial's {options.align!r} is NaN")
    if not keep.all():
        notes.append(f"{int((~keep).sum())} trials without a {options.align} left out")
    starts = align + options.window_ms[0] / 1000
    _check_window(bounds, keep, starts, align + options.window_ms[1] / 1000, recording.trial_ids, options, source)
    return keep, starts


def _trial_bounds(trials: dict[str, np.ndarray], ids: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Every trial's start and stop time (s): finite, since they bound the trial's bins and, without observed
    intervals, the recording itself (one NaN would make every bin unobserved)."""
    start = _column(trials, "start_time", source, "trial start")
    stop = _column(trials, "stop_time", source, "trial stop")
    for name, values in (("start_time", start), ("stop_time", stop)):
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{source}: trial {ids[i]} has {name} {values[i]}, and {int(bad.sum())} trials in all have no finite "
                f"{name}; every trial needs its start and stop time in seconds"
            )
    return start, stop


@dataclass(frozen=True)
class _Binner:
    """Cuts trials out of a recording: units in training order (held-in first), bins from each start."""

    recording: Recording
    order: np.ndarray
    observed: list[np.ndarray]
    series: list[tuple[np.ndarray, np.ndarray]]
    bin_s: float
    bins: tuple[int, int]  # trial and forward bins
    n_heldin: int

    def add_split(self, arrays: dict, name: str, ids: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """One split's arrays of the training file, added to `arrays`; returns its binned counts."""
        trial_bins, forward_bins = self.bins
        edges = bin_edges(starts, self.bin_s, trial_bins + forward_bins)
        spike_times = [self.recording.spike_times[u] for u in self.order]
        recon = bin_spikes(spike_times, edges, [self.observed[u] for u in self.order])
        arrays[f"{name}_encod_data"] = stored_counts(recon[:, :trial_bins, : self.n_heldin])
        arrays[f"{name}_recon_data"] = stored_counts(recon)
        arrays[f"{name}_inds"] = ids
        arrays[f"{name}_window_start"] = starts
        if self.series:
            centres = edges[:, :trial_bins] + self.bin_s / 2
            behavior = np.concatenate([resample(t, v, centres) for t, v in self.series], axis=-1)
            arrays[f"{name}_behavior"] = behavior.astype(np.float32)
        return recon


def _summary(out: Path, arrays: dict, attrs: dict, notes: list[str]) -> str:
    sizes = " / ".join(
        f"{name} {len(arrays[f'{name}_inds'])}" for name in ("train", "valid", "test") if f"{name}_inds" in arrays
    )
    (lo, hi), bins = attrs["window_ms"], f"{attrs['trial_bins']}+{attrs['forward_bins']} bins"
    return (
        f"{out}: {sizes} trials, {bins} of {attrs['bin_ms']} ms ({lo}..{hi} ms around {attrs['align']}), "
        f"{attrs['heldin']}+{attrs['heldout']} units" + "".join(f"; {note}" for note in notes)
    )


def identity(recording: Recording) -> dict[str, str | int]:
    """The session's identity as its training file records it (see autolfads.data.identity)."""
    trials = recording.trials or {"start_time": [], "stop_time": []}
    start, stop = (np.asarray(trials[name], dtype=np.float64) for name in ("start_time", "stop_time"))
    trial_ids = recording.trial_ids if recording.trial_ids is not None else np.arange(len(start))
    return fingerprint(recording.identifier, recording.unit_ids, recording.spike_times, trial_ids, start, stop)


def stored_counts(counts: np.ndarray) -> np.ndarray:
    """Counts as int16, or float32 when some are missing (NaN)."""
    return counts.astype(np.float32) if np.isnan(counts).any() else counts.astype(np.int16)


def check_units(recording: Recording) -> None:
    if not recording.spike_times:
        raise DataError(f"{recording.source}: the session has no units")
    silent = [str(recording.unit_ids[u]) for u, times in enumerate(recording.spike_times) if len(times) == 0]
    if silent:
        raise DataError(
            f"{recording.source}: {len(silent)} units have no spike times (unit ids {', '.join(silent[:10])}); every "
            "unit needs spikes"
        )


def _column(trials: dict[str, np.ndarray], name: str, source: str, option: str) -> np.ndarray:
    if name not in trials:
        raise DataError(f"{source}: the trials table has no column {name!r} ({option}); it has: {', '.join(trials)}")
    try:
        return np.asarray(trials[name], dtype=np.float64)
    except (TypeError, ValueError):
        row, value = _first_non_number(trials[name])
        raise DataError(
            f"{source}: trials column {name!r} ({option}) must hold times in seconds, but row {row} (counting from "
            f"0) holds {value!r}"
        ) from None


def _first_non_number(values: np.ndarray) -> tuple[int, object]:
    """The row and value of the first entry that is no number; an empty text cell (a missing time) only when
    nothing else is wrong."""
    bad = []
    for row, value in enumerate(values.tolist()):
        try:
            float(value)
        except (TypeError, ValueError):
            bad.append((row, value))
    filled = [(row, value) for row, value in bad if not (isinstance(value, str | bytes) and not value.strip())]
    return (filled or bad)[0]


def _check_window(
    bounds: tuple[np.ndarray, np.ndarray],
    keep: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    ids: np.ndarray,
    options: TrialOptions,
    source: str,
) -> None:
    start, stop = bounds
    tolerance = 1e-9
    outside = keep & ((first < start - tolerance) | (last > stop + tolerance))
    if outside.any():
        i = int(np.argmax(outside))
        lo, hi = options.window_ms
        raise DataError(
            f"{source}: the window {lo}..{hi} ms around {options.align} lies outside {int(outside.sum())} trials, e.g. "
            f"trial {ids[i]}: {first[i]:.4f}..{last[i]:.4f} s but the trial runs {start[i]:.4f}..{stop[i]:.4f} s; "
            "choose a window inside every trial"
        )


def _splits(trials: dict, keep: np.ndarray, ids: np.ndarray, options: TrialOptions, source: str) -> np.ndarray:
    """Each trial's split: train, valid, test, or '' (left out)."""
    split = np.full(len(keep), "", dtype=object)
    if options.split_column is not None:
        if options.split_column not in trials:
            raise DataError(
                f"{source}: the trials table has no column {options.split_column!r} (--split-column); it has: "
                f"{', '.join(trials)}"
            )
        values = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in trials[options.split_column]])
        unknown = sorted(set(values) - set(SPLIT_VALUES))
        if unknown:
            raise DataError(
                f"{source}: trials column {options.split_column!r} holds '{unknown[0]}'; expected "
                f"{', '.join(SPLIT_VALUES)}"
            )
        for value, name in SPLIT_VALUES.items():
            split[(values == value) & keep] = name or ""
    else:
        rows = np.flatnonzero(keep)
        n_valid = int(round(options.valid_fraction * len(rows)))
        if options.valid_fraction > 0:
            n_valid = max(n_valid, 1)
        order = np.random.default_rng([options.seed, 1]).permutation(rows)  # its own stream: independent of the units'
        split[rows] = "train"
        split[order[:n_valid]] = "valid"
    where = (
        f"--split-column {options.split_column}"
        if options.split_column
        else f"--valid-fraction {options.valid_fraction}"
    )
    for name in ("train", "valid"):
        if not (split == name).any():
            raise DataError(
                f"{source}: no {name} trials ({where}, {int(keep.sum())} usable trials); LFADS needs train and valid "
                "trials"
            )
    return split


def _heldout_units(recording: Recording, options: TrialOptions) -> np.ndarray:
    n = len(recording.spike_times)
    if options.heldout_column is not None:
        heldout = _heldout_column(recording, options)
    else:
        heldout = np.zeros(n, dtype=bool)
        count = int(round(options.heldout_fraction * n))
        if options.heldout_fraction > 0:
            count = max(count, 1)
        heldout[np.random.default_rng([options.seed, 0]).choice(n, count, replace=False)] = True
    if heldout.all():
        raise DataError(f"{recording.source}: every one of the {n} units is held out; some must be held in")
    return heldout


def _heldout_column(recording: Recording, options: TrialOptions) -> np.ndarray:
    column, source = options.heldout_column, recording.units_source
    if options.heldout_fraction:
        raise ConfigError("give --heldout-column or --heldout-fraction, not both")
    if source == "":
        raise ConfigError(
            f"--heldout-column {column} reads a units table, and none was given: add --units FILE (a CSV with a unit "
            f"column and a {column} column)"
        )
    source = source or recording.source
    if column not in recording.unit_columns:
        raise DataError(
            f"{source}: the units table has no column {column!r} (--heldout-column); it has: "
            f"{', '.join(recording.unit_columns) or 'none'}"
        )
    flags = [_flag(value) for value in np.asarray(recording.unit_columns[column]).tolist()]
    if None in flags:
        unit = flags.index(None)
        raise DataError(
            f"{source}: units column {column!r} must be boolean (held out or not), but unit "
            f"{recording.unit_ids[unit]} has {recording.unit_columns[column][unit].tolist()!r}"
        )
    return np.asarray(flags, dtype=bool)


def _flag(value: object) -> bool | None:
    """A held-out flag: a boolean, 0 or 1, or their spellings in text (BOOLEAN_TEXT); None for anything else."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return BOOLEAN_TEXT.get(value.strip().lower())
    return bool(value) if value in (0, 1) else None


def _conditions(trials: dict, column: str | None, source: str) -> tuple[np.ndarray, np.ndarray] | None:
    if column is None:
        return None
    if column not in trials:
        raise DataError(
            f"{source}: the trials table has no column {column!r} (--condition-column); it has: {', '.join(trials)}"
        )
    values = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in trials[column]])
    names, labels = np.unique(values, return_inverse=True)
    return labels.astype(np.int64), names


def _series(recording: Recording, name: str) -> tuple[np.ndarray, np.ndarray]:
    if name not in recording.series:
        raise DataError(
            f"{recording.source}: no time series {name!r} (--behavior); found: "
            f"{', '.join(sorted(recording.series)) or 'none'}"
        )
    return recording.series[name]


def _targets(arrays: dict, counts: dict, trial_bins: int, n_heldin: int, options: TrialOptions, name: str):
    """The valid trials' evaluation targets (what the session lacks is left out), or None when there is
    nothing to score: no held-out units, forward bins or behaviour."""
    valid = counts["valid"]
    forward_bins, n_heldout = valid.shape[1] - trial_bins, valid.shape[2] - n_heldin
    target_arrays = {}
    if n_heldout:
        target_arrays["eval_spikes_heldout"] = valid[:, :trial_bins, n_heldin:].astype(np.float32)
    if forward_bins:
        target_arrays["eval_spikes_heldin_forward"] = valid[:, trial_bins:, :n_heldin].astype(np.float32)
        target_arrays["eval_spikes_heldout_forward"] = valid[:, trial_bins:, n_heldin:].astype(np.float32)
    if options.behavior:
        target_arrays["train_behavior"], target_arrays["eval_behavior"] = (
            arrays["train_behavior"],
            arrays["valid_behavior"],
        )
    if not target_arrays:
        return None
    return Targets(
        name,
        SESSION_DATASET,
        options.bin_ms,
        target_arrays,
        arrays["train_inds"],
        arrays["valid_inds"],
        (trial_bins, forward_bins, n_heldin, n_heldout),
    )
