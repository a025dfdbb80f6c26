"""Plain spike times -> the LFADS training file and its targets, for recordings without NWB.

    autolfads data spikes --spikes spikes.csv --trials trials.csv --align go_time --window -100 500 --bin-ms 10 \\
        --heldout-fraction 0.2 --out data/session.h5

--spikes: CSV with a header and the columns unit,time (one spike a row; time in seconds; unit any label),
or NPZ with the arrays unit and time. --trials: CSV with a header; start_time and stop_time (or start and
stop) in seconds, an optional id column (default: the row number), and any alignment, split and condition
columns. --units (optional): CSV with a unit column and per-unit columns (e.g. heldout, true/false);
units it lists that never spike are reported. Without observed intervals, the recording is taken as
running from the first trial's start to the last trial's stop.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from autolfads.data.nlb_targets import targets_path
from autolfads.data.session import BOOLEAN_TEXT, Recording, SessionFiles, TrialOptions, prepare_session
from autolfads.errors import DataError
from autolfads.files import check_distinct

ALIASES = {"start": "start_time", "stop": "stop_time"}
TRUE = {text for text, flag in BOOLEAN_TEXT.items() if flag}
FALSE = set(BOOLEAN_TEXT) - TRUE


def read_spikes(spikes: str | Path, trials: str | Path, units: str | Path | None = None) -> Recording:
    spikes, trials = Path(spikes), Path(trials)
    unit, time = _spike_table(spikes)
    columns = _read_csv(trials)
    columns = {ALIASES.get(name, name): values for name, values in columns.items()}
    for name in ("start_time", "stop_time"):
        if name not in columns:
            raise DataError(
                f"{trials}: the trials CSV has no column {name!r} (or {name.removesuffix('_time')!r}); it has: "
                f"{', '.join(columns)}"
            )
    columns = {name: _typed(values) for name, values in columns.items()}
    n_trials = len(columns["start_time"])
    ids = columns.pop("id").astype(np.int64) if "id" in columns else np.arange(n_trials)
    labels = np.unique(unit)
    unit_columns: dict[str, np.ndarray] = {}
    if units is not None:
        table = _read_csv(Path(units))
        if "unit" not in table:
            raise DataError(f"{units}: the units CSV has no column 'unit'; it has: {', '.join(table)}")
        listed = np.asarray(table.pop("unit"), dtype=labels.dtype)
        labels = np.asarray(sorted(set(labels.tolist()) | set(listed.tolist())), dtype=labels.dtype)
        row = {label: i for i, label in enumerate(listed.tolist())}
        missing = [label for label in labels.tolist() if label not in row]
        if missing:
            raise DataError(f"{units}: spiking unit {missing[0]!r} is not in the units CSV ({len(missing)} missing)")
        unit_columns = {
            name: _typed(values)[[row[label] for label in labels.tolist()]] for name, values in table.items()
        }
    spike_times = [np.sort(time[unit == label]) for label in labels]
    return Recording(
        str(spikes),
        spike_times,
        labels,
        unit_columns,
        None,
        columns,
        ids,
        trials_source=str(trials),
        units_source=str(units) if units is not None else "",
    )


def prepare_spikes(
    spikes: str | Path,
    trials: str | Path,
    units: str | Path | None,
    options: TrialOptions,
    out: str | Path,
    targets_out: str | Path | None = None,
) -> SessionFiles:
    """`autolfads data spikes`: the files read into a Recording, then session.prepare_session. Refused before
    anything is read: an output that is one of the input files."""
    check_distinct(
        {"--out": out, "--targets": targets_path(out, targets_out)},
        {"--spikes": spikes, "--trials": trials, "--units": units},
    )
    return prepare_session(read_spikes(spikes, trials, units), options, out, targets_out)


def _spike_table(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"spike file {path} does not exist")
    if path.suffix == ".npz":
        unit, time = _read_npz(path)
    else:
        table = _read_csv(path)
        missing = [key for key in ("unit", "time") if key not in table]
        if missing:
            raise DataError(
                f"{path}: the spikes CSV has no column {missing[0]!r}; expected unit,time (one spike a row), it has: "
                f"{', '.join(table)}"
            )
        unit, time = _typed(table["unit"]), table["time"]
    try:
        time = np.asarray(time, dtype=np.float64)
    except ValueError:
        raise DataError(f"{path}: spike times must be numbers (seconds)") from None
    if unit.shape != time.shape or unit.ndim != 1:
        raise DataError(f"{path}: unit and time must be 1-D and equally long, got {unit.shape} and {time.shape}")
    if not len(time):
        raise DataError(f"{path}: no spikes")
    if not np.isfinite(time).all():
        raise DataError(f"{path}: {int((~np.isfinite(time)).sum())} spike times are NaN or infinite")
    return unit, time


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in ("unit", "time") if key not in npz]
            if missing:
                raise DataError(
                    f"{path}: the NPZ has no array {missing[0]!r}; expected unit and time (one entry per spike), it "
                    f"has: {', '.join(npz.files)}"
                )
            return npz["unit"], npz["time"]
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: cannot read as an NPZ file (numpy.savez) with arrays unit and time: {err}") from None


def _read_csv(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise DataError(f"{path}: empty CSV; expected a header row")
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(
            f"{path}: not a text CSV file ({err}); expected comma-separated text with a header row"
        ) from None
    if not rows:
        raise DataError(f"{path}: the CSV has a header but no rows")
    return {
        name.strip(): [row[name].strip() if row[name] is not None else "" for row in rows] for name in reader.fieldnames
    }


def _typed(values: list[str] | np.ndarray) -> np.ndarray:
    """CSV text as integers, floats (empty: NaN), booleans, or else strings."""
    values = [str(v) for v in values]
    lowered = {v.lower() for v in values}
    if lowered <= TRUE | FALSE and lowered - {"0", "1"}:
        return np.asarray([v.lower() in TRUE for v in values])
    try:
        return np.asarray(values, dtype=np.int64)
    except ValueError:
        pass
    try:
        return np.asarray([v or "nan" for v in values], dtype=np.float64)
    except ValueError:
        return np.asarray(values)
