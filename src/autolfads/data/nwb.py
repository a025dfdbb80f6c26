"""Any NWB session -> the LFADS training file and its targets: its Units table's spike times binned in the
trials of its trials table (see autolfads.data.session for the layout).

    autolfads data nwb --nwb session.nwb --align move_onset_time --window -250 450 --bin-ms 5 \\
        --heldout-fraction 0.2 --forward-ms 200 --behavior hand_vel --out data/session.h5

A session without a trials table is binned whole into a continuous recording (key `data`, time x units) for
`autolfads data chop`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autolfads.data.binning import bin_edges, bin_spikes
from autolfads.data.hdf5 import KIND_ATTR, write_lfads_h5
from autolfads.data.nlb_targets import targets_path
from autolfads.data.session import (
    Recording,
    SessionFiles,
    TrialOptions,
    check_units,
    identity,
    prepare_session,
    stored_counts,
)
from autolfads.errors import ConfigError, DataError, MissingDependency
from autolfads.files import check_distinct


def read_nwb(path: str | Path, behavior: tuple[str, ...] = ()) -> Recording:
    """The session's units, trials and the named time series (searched everywhere in the file)."""
    try:
        from pynwb import NWBHDF5IO
    except ImportError:
        raise MissingDependency("reading NWB files needs pynwb: pip install pynwb") from None
    path = Path(path)
    if not path.is_file():
        raise DataError(f"NWB file {path} does not exist")
    try:
        with NWBHDF5IO(str(path), "r") as io:
            nwb = io.read()
            return _recording(path, nwb, behavior)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: cannot read as an NWB file: {err}") from None


def prepare_nwb(
    nwb: str | Path, options: TrialOptions, out: str | Path, targets_out: str | Path | None = None
) -> SessionFiles:
    check_distinct({"--out": out, "--targets": targets_path(out, targets_out)}, {"--nwb": nwb})
    recording = read_nwb(nwb, options.behavior)
    if recording.trials is None:
        return prepare_continuous(recording, options.bin_ms, out)
    return prepare_session(recording, options, out, targets_out)


def session_identity(path: str | Path, nwb) -> dict[str, str | int]:
    """The identity (autolfads.data.identity) of an open NWB session (a pynwb NWBFile), as `data nwb` records it."""
    return identity(_recording(Path(path), nwb, ()))


def _recording(path: Path, nwb, behavior: tuple[str, ...]) -> Recording:
    units = nwb.units
    if units is None or "spike_times" not in units.colnames:
        found = (
            "no units table"
            if units is None
            else f"a units table without spike_times (it has: {', '.join(units.colnames)})"
        )
        raise DataError(f"{path}: the NWB file has {found}; `data nwb` bins sorted units' spike times")
    spike_times = [np.asarray(units["spike_times"][i], dtype=np.float64) for i in range(len(units))]
    observed = (
        [np.asarray(units["obs_intervals"][i], dtype=np.float64).reshape(-1, 2) for i in range(len(units))]
        if "obs_intervals" in units.colnames
        else None
    )
    unit_columns = {
        name: np.asarray(units[name][:])
        for name in units.colnames
        if name not in ("spike_times", "obs_intervals") and _is_flat(units[name])
    }
    trials, trial_ids = None, None
    if nwb.trials is not None and len(nwb.trials):
        table = nwb.trials
        trials = {name: np.asarray(table[name][:]) for name in table.colnames if _is_flat(table[name])}
        trial_ids = np.asarray(table.id[:])
    series = _timeseries(nwb)
    wanted = {}
    for name in behavior:
        if name not in series:
            raise DataError(
                f"{path}: no TimeSeries {name!r} (--behavior); the file has: {', '.join(sorted(series)) or 'none'}"
            )
        wanted[name] = _samples(series[name])
    return Recording(
        str(path),
        spike_times,
        np.asarray(units.id[:]),
        unit_columns,
        observed,
        trials,
        trial_ids,
        wanted,
        identifier=str(nwb.identifier),
    )


def _is_flat(column) -> bool:
    """One value per row (not a ragged or a reference column)."""
    from hdmf.common import VectorIndex

    try:
        return not isinstance(column, VectorIndex) and np.asarray(column.data[:1]).ndim == 1
    except (TypeError, ValueError):
        return False


def _timeseries(nwb) -> dict:
    """Every TimeSeries of the file by name, also as PARENT/NAME (the unambiguous spelling)."""
    from pynwb import TimeSeries

    found: dict = {}
    for obj in nwb.objects.values():
        if isinstance(obj, TimeSeries):
            found.setdefault(obj.name, obj)
            if obj.parent is not None:
                found[f"{obj.parent.name}/{obj.name}"] = obj
    return found


def _samples(series) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(series.data[:], dtype=np.float64)
    if series.timestamps is not None:
        times = np.asarray(series.timestamps[:], dtype=np.float64)
    else:
        times = series.starting_time + np.arange(len(data)) / series.rate
    return times, data


def prepare_continuous(recording: Recording, bin_ms: int, out: str | Path) -> SessionFiles:
    """A session without trials binned whole, from its first observed time (else its first spike) to its
    last: key `data` (time x units, NaN where a unit is unobserved), for `autolfads data chop`."""
    if bin_ms <= 0:
        raise ConfigError(f"--bin-ms must be a positive number of milliseconds, got {bin_ms}")
    check_units(recording)
    if recording.observed is not None:
        spans = np.concatenate([intervals for intervals in recording.observed if intervals is not None])
        start, stop = spans.min(), spans.max()
    else:
        start = min(times.min() for times in recording.spike_times)
        stop = max(times.max() for times in recording.spike_times)
    bin_s = bin_ms / 1000
    n_bins = max(int(np.ceil((stop - start) / bin_s)), 1)
    counts = bin_spikes(recording.spike_times, bin_edges(np.array([start]), bin_s, n_bins), recording.observed)[0]
    attrs = {KIND_ATTR: "recording", "source": recording.source, "bin_ms": bin_ms, "start_time": float(start)}
    write_lfads_h5(out, {"data": stored_counts(counts), "unit_ids": recording.unit_ids}, attrs=attrs, compression=True)
    summary = (
        f"{out}: the session has no trials table: binned whole into a continuous recording, {n_bins} bins of {bin_ms} "
        "ms x "
        f"{counts.shape[1]} units (key data); chop it into trials with: autolfads data chop --input {out} --key data "
        "--window BINS --out CHOPS.h5"
    )
    return SessionFiles(Path(out), None, summary)
