"""What a report shows, read from disk: a training run folder or a search workdir.

Everything comes from the files the run or search left behind (config.yaml, metrics.csv, the search
tables, lfads_output.h5 and the data file recorded in config.yaml as data.dir), so a report can be made
at any time, also of a run that is still going. A missing output or data file leaves out the figures that
need it, with a note saying why; a folder that is neither a run nor a search is a ReportError. A stitched
model has one output and one data file per session: every session gets a row (session_rows), the figures
show the first.
"""

import csv
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import yaml

from ..config import Config, SessionDims, load_saved_config
from ..data.dataset import LFADSData
from ..data.output_file import read_output
from ..errors import AutoLFADSError, DataError, ReportError
from ..evaluate.metrics import bits_per_spike, r2_score
from ..layout import (
    BEST_DIR,
    CONFIG_FILE,
    EXPLOITS_FILE,
    METRICS_FILE,
    OUTPUT_FILE,
    RUN_LOG,
    SEARCH_LOG,
    SETTINGS_FILE,
    SPACE_FILE,
    STATE_FILE,
)
from ..names import MEMBER_HPARAMS, PBT_METRICS, RANK_ONLY_METRICS
from ..search.pbt import best_member
from ..search.space import SearchSpace, load_search_space
from ..train.output import output_paths
from ..train.run import read_sessions

# What a report needs of metrics.csv (besides a row): the rows are epochs of members.
METRICS_COLUMNS = ("epoch", "member")
# A line that starts a training or search session in train.log / search.log ("new run", "resumed ...").
SESSION_START = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (new |resumed)")


@dataclass
class Inferred:
    """One split's trials: the data and the posterior-sampled outputs, row for row."""

    split: str
    spikes: np.ndarray  # (n, T, N) counts: the reconstructed data (held-in + held-out neurons)
    rates: np.ndarray  # (n, T, N) inferred rates, counts per bin
    factors: np.ndarray  # (n, T, F)
    truth: np.ndarray | None  # (n, T, N) true rates in counts per bin, when the data has them
    conditions: np.ndarray | None  # (n,) condition of every trial, when the data has them


@dataclass
class SessionRow:
    """One session of a stitched model: its neurons and trials, and how well its inferred rates fit."""

    name: str
    output: Path  # its lfads_output_<session>.h5
    heldin: int
    heldout: int
    trials: dict[str, int] = field(default_factory=dict)  # per split, from the data file (empty: not read)
    r2: dict[str, float] = field(default_factory=dict)  # per split with true rates: posterior-sampled rates vs truth
    bps: dict[str, float] = field(default_factory=dict)  # per split, Poisson data: held-in bits/spike


@dataclass
class LineageStep:
    generation: int
    member: int
    metric: float
    hparams: dict[str, float]
    inherited_from: int | None  # the winner whose state this member copied after the previous generation


@dataclass
class SearchTables:
    settings: dict
    space: SearchSpace
    state: list[dict[str, float]]  # state.csv: one row per member and generation
    exploits: list[dict[str, float]]  # exploits.csv
    best_member: int
    lineage: list[LineageStep]  # generation 0 first


@dataclass
class Results:
    kind: str  # "run" or "search"
    folder: Path
    config: Config  # the best member's for a search
    metrics: list[dict[str, float]]  # metrics.csv: every member's every epoch
    model_dir: Path  # the run folder holding lfads_output.h5 (best_model/ for a search)
    data: LFADSData | None
    inferred: dict[str, Inferred]
    search: SearchTables | None
    wall_time_s: float | None
    hardware: str
    output_attrs: dict = field(default_factory=dict)
    sessions: list[SessionRow] = field(default_factory=list)  # a stitched model's sessions (empty: one session)
    notes: list[str] = field(default_factory=list)  # what is left out of the report, and why

    @property
    def select_metric(self) -> str:
        """What selected the model (train.select_metric; a run saved before the setting: the held-in score)."""
        return self.config.train.select_metric


def load_results(folder: str | Path) -> Results:
    folder = Path(folder)
    if (folder / SETTINGS_FILE).is_file():
        return _load_search(folder)
    if (folder / CONFIG_FILE).is_file() and (folder / METRICS_FILE).is_file():
        return _load_run(folder)
    if not folder.exists():
        raise ReportError(f"{folder} does not exist")
    if not folder.is_dir():
        raise ReportError(f"{folder} is a file: give a training run folder or a search workdir")
    raise ReportError(
        f"{folder} is neither a training run folder ({CONFIG_FILE} and {METRICS_FILE}) nor a search workdir "
        f"({SETTINGS_FILE})"
    )


def _load_run(folder: Path) -> Results:
    config = _config(folder / CONFIG_FILE)
    log = folder / RUN_LOG
    results = Results(
        "run",
        folder,
        config,
        read_table(folder / METRICS_FILE, METRICS_COLUMNS),
        folder,
        None,
        {},
        None,
        logged_wall_time(log),
        logged_hardware(log),
    )
    _load_inferred(results)
    return results


def _load_search(folder: Path) -> Results:
    state = read_table(folder / STATE_FILE) if (folder / STATE_FILE).is_file() else []
    if not state:
        raise ReportError(
            f"{folder} holds a search that has not completed a generation yet ({STATE_FILE} is missing or empty)"
        )
    exploits = read_table(folder / EXPLOITS_FILE) if (folder / EXPLOITS_FILE).is_file() else []
    try:
        settings = yaml.safe_load((folder / SETTINGS_FILE).read_text())
        space = load_search_space(folder / SPACE_FILE)
    except (OSError, yaml.YAMLError, AutoLFADSError) as err:
        raise ReportError(f"{folder}: cannot read the search settings: {err}") from None
    model_dir = folder / BEST_DIR
    config = _config(model_dir / CONFIG_FILE if (model_dir / CONFIG_FILE).is_file() else folder / CONFIG_FILE)
    select = config.train.select_metric
    rank = settings.get("metric") if settings.get("metric") in RANK_ONLY_METRICS else select  # as the search ranked
    last = [row for row in state if row["generation"] == state[-1]["generation"]]
    best = int(last[best_member([PBT_METRICS[rank] * row[rank] for row in last])]["member"])
    tables = SearchTables(settings, space, state, exploits, best, lineage(state, exploits, best, select))
    log = folder / SEARCH_LOG
    results = Results(
        "search",
        folder,
        config,
        read_table(folder / METRICS_FILE, METRICS_COLUMNS),
        model_dir,
        None,
        {},
        tables,
        logged_wall_time(log),
        logged_hardware(log),
    )
    _load_inferred(results)
    return results


def lineage(state: list[dict], exploits: list[dict], member: int, metric: str) -> list[LineageStep]:
    """Follow `member` of the last generation back to generation 0: after generation g, a loser continues
    from its winner's state, so the member's past before an exploit is the winner's. metric: the one each step
    shows."""
    rows = {(int(row["generation"]), int(row["member"])): row for row in state}
    lost = {(int(row["generation"]), int(row["loser"])): int(row["winner"]) for row in exploits}
    steps = []
    for generation in range(int(state[-1]["generation"]), -1, -1):
        row = rows[generation, member]
        winner = lost.get((generation - 1, member))
        steps.append(
            LineageStep(
                generation, member, row[metric], {name: row[name] for name in MEMBER_HPARAMS if name in row}, winner
            )
        )
        member = winner if winner is not None else member
    return steps[::-1]


def read_table(path: Path, columns: tuple[str, ...] = ()) -> list[dict[str, float]]:
    """A CSV of numbers; empty cells are NaN. columns: ones it must have, with at least one row."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = [_numbers(row, path, reader.line_num) for row in reader]
            header = reader.fieldnames
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ReportError(f"cannot read {path}: {err}") from None
    missing = [name for name in columns if name not in (header or [])]
    if columns and (missing or not rows):
        found = "is empty" if not header else f"has no column {', '.join(missing)}" if missing else "has no rows"
        raise ReportError(
            f"{path} {found}: expected a table written by autolfads with {', '.join(columns)} and a row per epoch"
        )
    return rows


def _numbers(row: dict, path: Path, line: int) -> dict[str, float]:
    """One CSV row as numbers; a cell that is not one, or a row of the wrong length, is a ReportError."""
    if None in row or None in row.values():  # csv.DictReader's marks of a row longer or shorter than the header
        raise ReportError(
            f"{path}, line {line}: the row has {'more' if None in row else 'fewer'} cells than the header"
        )
    values = {}
    for name, value in row.items():
        try:
            values[name] = float(value) if value != "" else math.nan
        except ValueError:
            raise ReportError(f"{path}, line {line}: {name} is {value!r}, not a number") from None
    return values


def logged_wall_time(path: Path) -> float | None:
    """Seconds spent in the sessions a log records (each from its 'new ...'/'resumed ...' line to its last
    line), so the time between a kill and a resume does not count."""
    if not path.is_file():
        return None
    total, start, end = 0.0, None, None
    for line in path.read_text(errors="replace").splitlines():
        try:
            stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            continue  # a continuation line (the search summary spans several)
        if SESSION_START.match(line) or start is None:
            total += (end - start) if start is not None else 0.0
            start = stamp
        end = stamp
    return total + (end - start) if start is not None else None


def logged_hardware(path: Path) -> str:
    """Device and threads as the run's log recorded them at its last start."""
    if not path.is_file():
        return "not recorded"
    text = path.read_text(errors="replace")
    runs = re.findall(r"device (\S+), threads (\d+)", text)
    if runs:
        device, threads = runs[-1]
        return f"{device}, {threads} torch thread{'s' if threads != '1' else ''}"
    searches = re.findall(r"population \d+ on (\S+?),", text)
    if searches:
        return f"{searches[-1]} (embedded backend: the whole population in one process)"
    if "new Ray search" in text:
        return "Ray cluster (one trial per member)"
    return "not recorded"


def _config(path: Path) -> Config:
    try:
        return load_saved_config(path)
    except AutoLFADSError as err:
        raise ReportError(str(err)) from None


def _load_inferred(results: Results) -> None:
    """The data named in config.yaml (data.dir) and the output file, matched trial by trial through *_inds.
    A stitched model: a row per session (session_rows); the figures show the first session."""
    model = results.config.model
    names = [dims.name for dims in model.sessions]
    outputs = output_paths(results.model_dir / OUTPUT_FILE, names)
    data = None
    if len(names) > 1:
        data = _read_data(results)
        results.sessions, notes = session_rows(model.sessions, outputs, data, model.reconstruction == "poisson")
        results.notes += notes
    output = outputs[0]
    if results.kind == "search" and not output.is_file():
        results.notes.append(f"the search has not finished: {BEST_DIR}/ and its {output.name} are written at its end")
        return
    if not output.is_file():
        results.notes.append(
            f"no {output.name} in {results.model_dir} yet: write it with `autolfads sample --checkpoint "
            f"{results.model_dir}`"
        )
        return
    if len(names) <= 1:
        data = _read_data(results)
    shown = [session for session in data or [] if not names or session.name == names[0]]
    if not shown:
        return  # the notes say why
    results.data = shown[0]
    try:
        read = read_output(output, ("rates", "factors"))
    except DataError as err:
        raise ReportError(str(err)) from None
    stored, results.output_attrs = read.arrays(), read.attrs
    try:
        with h5py.File(results.data.path, "r") as h5:
            conditions = {
                split.name: np.asarray(h5[f"{split.name}_cond_idx"])
                for split in results.data.splits
                if f"{split.name}_cond_idx" in h5
            }
    except OSError as err:
        raise ReportError(f"cannot read {results.data.path}: {err}") from None
    for split in results.data.splits:
        if split.recon is None or f"{split.name}_rates" not in stored:
            continue
        order = _match_trials(stored[f"{split.name}_inds"], split.inds)
        if order is None:
            results.notes.append(
                f"{output} holds other {split.name} trials than {results.data.path}; its {split.name} split is left out"
            )
            continue
        truth = split.truth.numpy() if split.truth is not None else None
        results.inferred[split.name] = Inferred(
            split.name,
            split.recon.numpy(),
            stored[f"{split.name}_rates"][order],
            stored[f"{split.name}_factors"][order],
            truth,
            conditions.get(split.name),
        )


def _read_data(results: Results) -> list[LFADSData] | None:
    """Every session of the data recorded in config.yaml, loaded as training loaded it; None (and a note) if
    it cannot be."""
    config = results.config
    if config.data.dir is None:
        results.notes.append(f"{results.model_dir / CONFIG_FILE} names no data file (data.dir)")
        return None
    try:
        return read_sessions(config, config.data.dir)
    except AutoLFADSError as err:
        results.notes.append(
            f"the data file recorded in config.yaml cannot be read, so data figures are left out: {err}"
        )
        return None


def session_rows(
    sessions: list[SessionDims], outputs: list[Path], data: list[LFADSData] | None, poisson: bool
) -> tuple[list[SessionRow], list[str]]:
    """A row per session of a stitched model (sessions and outputs in the model's order; data: the loaded
    sessions, matched by name, None when they could not be read) and notes on what is missing.
    R^2: the session's posterior-sampled rates against its true rates, per neuron over trials x bins and
    averaged over neurons (evaluate.metrics.r2_score, the definition val_r2 follows). Bits/spike: held-in
    neurons and bins, against each neuron's mean count (as val_bps), for Poisson data without missing entries."""
    by_name = {session.name: session for session in data or []}
    rows, notes, no_data, no_output = [], [], [], []
    for dims, output in zip(sessions, outputs, strict=True):
        row = SessionRow(dims.name, output, dims.data_dim - dims.cs_dim, dims.cs_dim)
        rows.append(row)
        session = by_name.get(dims.name)
        if session is None:
            no_data.append(dims.name)
            continue
        row.trials = {split.name: split.n_trials for split in session.splits}
        if not output.is_file():
            no_output.append(output.name)
            continue
        try:
            stored = read_output(output, ("rates",)).arrays()
        except DataError as err:
            notes.append(str(err))
            continue
        for split in session.splits:
            if f"{split.name}_rates" not in stored:
                continue
            order = _match_trials(stored[f"{split.name}_inds"], split.inds)
            if order is None:
                notes.append(
                    f"{output} holds other {split.name} trials than {session.path}: no {split.name} scores for session "
                    f"{dims.name}"
                )
                continue
            rates = stored[f"{split.name}_rates"][order].astype(np.float64)
            if split.truth is not None:
                row.r2[split.name] = r2_score(split.truth.double().numpy(), rates)
            if poisson and split.recon is not None:
                heldin = split.recon[:, : session.encod_seq_len, : session.encod_dim].double().numpy()
                if not np.isnan(heldin).any():
                    row.bps[split.name] = bits_per_spike(rates[:, : session.encod_seq_len, : session.encod_dim], heldin)
    if data is not None and no_data:
        notes.append(
            f"no data file of session{'s' if len(no_data) > 1 else ''} {', '.join(no_data)} in "
            f"{Path(data[0].path).parent}: no trials or scores for {'them' if len(no_data) > 1 else 'it'}"
        )
    if no_output:
        notes.append(
            f"no {', '.join(no_output)} in {outputs[0].parent}: no scores for "
            f"{'those sessions' if len(no_output) > 1 else 'that session'}"
        )
    return rows, notes


def _match_trials(output_inds: np.ndarray, data_inds: np.ndarray) -> np.ndarray | None:
    """Rows of the output file in the data file's trial order, or None if they hold different trials."""
    position = {int(ind): row for row, ind in enumerate(output_inds)}
    if (
        len(position) != len(output_inds)
        or len(output_inds) != len(data_inds)
        or any(int(ind) not in position for ind in data_inds)
    ):
        return None
    return np.array([position[int(ind)] for ind in data_inds])
