"""Results back into NWB: a copy of the session with LFADS's inferred rates, factors and inferred inputs.

    autolfads export-nwb --output runs/session/lfads_output.h5 --nwb session.nwb --out session_lfads.nwb

The copy gains a processing module `lfads` holding
    rates            TimeSeries, time x units (Hz; the Units table's order), posterior-mean rates
    factors          TimeSeries, time x factors
    inferred_inputs  TimeSeries, time x controller outputs (absent when the model has none)
    trials           TimeIntervals: each exported trial's window, its trial id in the session and its split
sampled at the centres of the trial bins (forward-prediction bins are left out) of every trial of the
training file (`autolfads data nwb` writes {split}_window_start for this), in time order. The module's
description holds the model's config. The training file is the output's data_file attribute unless --data
gives it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from autolfads import __version__
from autolfads.config import load_config
from autolfads.data.identity import differences, identity_of
from autolfads.data.nwb import session_identity
from autolfads.data.output_file import read_output
from autolfads.errors import DataError, MissingDependency
from autolfads.files import check_distinct, write_atomic
from autolfads.layout import CONFIG_FILE

MODULE = "lfads"
ALIGN_TOLERANCE = 1e-6  # seconds


def export_nwb(
    output: str | Path,
    nwb: str | Path,
    out: str | Path,
    *,
    data: str | Path | None = None,
    config: str | Path | None = None,
    note: Callable[[str], None] | None = None,
) -> Path:
    """Write the copy (see the module doc) after checking that the output, the training file and the session
    agree: the session's identity recorded in the training file (autolfads.data.identity), its units, and its
    trials and their times. note: receives what could not be checked (files made before identities were
    recorded)."""
    try:
        from pynwb import NWBHDF5IO
    except ImportError:
        raise MissingDependency("export-nwb needs pynwb: pip install pynwb") from None
    output, nwb, out = Path(output), Path(nwb), Path(out)
    read = read_output(output, ("rates", "factors", "gen_inputs"))
    fields, attrs = read.splits, read.attrs
    data = Path(data or attrs.get("data_file") or "")  # "": none named, which _read_layout reports
    check_distinct({"--out": out}, {"--nwb": nwb, "--output": output, "--data": data, "--config": config})
    layout = _read_layout(data, output)
    config_text = _config_text(output, attrs, config)
    read_io, session = _open_session(nwb)
    with read_io:
        if MODULE in session.processing:
            raise DataError(f"{nwb}: already has a processing module {MODULE!r}; export from the original session")
        rows = _rows(session, layout, fields, data, nwb)
        for line in _check_same_session(session, nwb, layout, data, identity_of(attrs), output):
            (note or warnings.warn)(line)
        _add_module(session, rows, layout, fields, config_text, output)
        session.set_modified()

        def write(tmp: Path) -> None:
            with NWBHDF5IO(str(tmp), "w") as export_io:
                export_io.export(src_io=read_io, nwbfile=session)

        try:
            write_atomic(out, write, tmp_suffix=".tmp.nwb", mkdir=True)  # pynwb wants the .nwb suffix
        except OSError as err:
            raise DataError(f"cannot write {out}: {err}") from None
    return out


def _open_session(nwb: Path):
    """The open NWBHDF5IO and its NWBFile; a file pynwb cannot read is one line."""
    from pynwb import NWBHDF5IO

    if not nwb.is_file():
        raise DataError(f"NWB file {nwb} does not exist")
    try:
        io = NWBHDF5IO(str(nwb), "r")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{nwb}: cannot read as an NWB file: {err}") from None
    try:
        return io, io.read()
    except Exception as err:  # pynwb and hdmf raise many kinds for files that are HDF5 but not NWB
        io.close()
        raise DataError(f"{nwb}: cannot read as an NWB file: {type(err).__name__}: {err}") from None


def _check_same_session(session, nwb: Path, layout: dict, data: Path, carried: dict, output: Path) -> list[str]:
    """Refuse a session other than the one the training file was made from, and an output made from other
    data; returns notes on what could not be checked."""
    recorded = layout["identity"]
    if carried and recorded:
        differ = differences(carried, recorded, str(output), str(data))
        if differ:
            raise DataError(
                f"{output} was made from another session than {data}: {'; '.join(differ)} differ; give the training "
                "file the model was trained on with --data"
            )
    if not recorded:
        n_units, n_session = len(layout["units"]), len(session.units.id[:])
        if n_units != n_session:
            raise DataError(
                f"{nwb} has {n_session} units but {data} was made from a session of {n_units}: is it the session the "
                "data came from?"
            )
        return [
            f"{data} records no identity of its session (made by an older autolfads): checked the units and the "
            f"trials' times only; remake it with `autolfads data nwb` for the full check"
        ]
    if not recorded.get("session_identifier"):  # plain spike times (`data spikes`) have no NWB identifier
        recorded = {key: value for key, value in recorded.items() if key != "session_identifier"}
    differ = differences(recorded, session_identity(nwb, session), str(data), str(nwb))
    if differ:
        raise DataError(
            f"{nwb} is not the session {data} was made from: {'; '.join(differ)} differ; export into that session "
            "(or a copy of it)"
        )
    return []


def _read_layout(path: Path, output: Path) -> dict:
    if not path.is_file():
        named = "(none named)" if path == Path("") else str(path)
        raise DataError(f"{output}: its training file {named} does not exist; give it with --data")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: cannot read the training file as HDF5: {err}") from None
    with h5:
        missing = [key for key in ("bin_ms", "trial_bins", "align", "window_ms") if key not in h5.attrs]
        if missing or "heldin_units" not in h5:
            raise DataError(
                f"{path}: not a training file of `autolfads data nwb` or `data spikes` (no "
                f"{missing[0] if missing else 'heldin_units'!r}); export-nwb places results by its trial windows"
            )
        layout = {key: h5.attrs[key] for key in ("bin_ms", "trial_bins", "align", "window_ms")}
        layout["identity"] = identity_of(h5.attrs)
        layout["units"] = np.concatenate([h5["heldin_units"][()], h5["heldout_units"][()]])
        layout["splits"] = {
            key.removesuffix("_window_start"): (h5[f"{key.removesuffix('_window_start')}_inds"][()], h5[key][()])
            for key in h5
            if key.endswith("_window_start")
        }
    return layout


def _config_text(output: Path, attrs: dict, config: str | Path | None) -> str:
    candidates = (
        [Path(config)]
        if config
        else [Path(str(attrs.get("checkpoint", output.parent))) / CONFIG_FILE, output.parent / CONFIG_FILE]
    )
    for path in candidates:
        if path.is_file():
            load_config(path)  # a config that is no config (invalid YAML, unknown keys) is refused, not stored
            return f"model config ({path.name}):\n{path.read_text()}"
    if config:
        raise DataError(f"config file {config} does not exist")
    return "model config: not found beside the output (give --config)"


def _rows(session, layout: dict, fields: dict, data: Path, nwb: Path) -> dict[str, np.ndarray]:
    """Every exported trial's window start, id, split and output row, in time order, checked against the
    session: its trials exist and their alignment gives the training file's windows."""
    if session.trials is None:
        raise DataError(f"{nwb}: the session has no trials table; export-nwb places trial results by it")
    trial_ids = np.asarray(session.trials.id[:])
    if layout["align"] not in session.trials.colnames:
        raise DataError(
            f"{nwb}: the trials table has no {layout['align']!r}, which {data} was aligned to: is it the session the "
            "data came from?"
        )
    align = np.asarray(session.trials[layout["align"]][:], dtype=np.float64)
    position = {int(trial): i for i, trial in enumerate(trial_ids)}
    starts, ids, splits, rows = [], [], [], []
    for split, values in fields.items():
        if split not in layout["splits"]:
            raise DataError(f"{data}: no {split}_window_start for the output's {split} trials")
        inds, window_start = layout["splits"][split]
        if not np.array_equal(values["inds"], inds):
            raise DataError(f"the output's {split}_inds differ from {data}'s: was the model trained on another file?")
        for row, (trial, start) in enumerate(zip(inds.tolist(), window_start.tolist())):
            if trial not in position:
                raise DataError(f"{nwb}: no trial {trial}, which {data} holds: is it the session the data came from?")
            expected = align[position[trial]] + layout["window_ms"][0] / 1000
            if abs(expected - start) > ALIGN_TOLERANCE:
                raise DataError(
                    f"{nwb}: trial {trial}'s window starts at {expected:.6f} s here but at {start:.6f} s in {data}: is "
                    "it the session the data came from?"
                )
            starts.append(start), ids.append(trial), splits.append(split), rows.append(row)
    order = np.argsort(starts, kind="stable")
    return {
        "start": np.asarray(starts)[order],
        "id": np.asarray(ids)[order],
        "split": np.asarray(splits)[order],
        "row": np.asarray(rows)[order],
    }


def _add_module(session, rows: dict, layout: dict, fields: dict, config_text: str, output: Path) -> None:
    """The `lfads` processing module: rates, factors, inferred inputs and the exported trials' windows."""
    from pynwb import TimeSeries

    bin_s, trial_bins = float(layout["bin_ms"]) / 1000, int(layout["trial_bins"])
    if np.any(np.diff(rows["start"]) < trial_bins * bin_s - ALIGN_TOLERANCE):
        raise DataError(
            "the trials' windows overlap, so their results cannot form one time series; "
            "export trials whose windows do not overlap"
        )
    timestamps = (rows["start"][:, None] + bin_s * (np.arange(trial_bins) + 0.5)).reshape(-1)

    def stacked(name: str) -> np.ndarray:
        return np.concatenate(
            [fields[split][name][row, :trial_bins][None] for split, row in zip(rows["split"], rows["row"])]
        ).reshape(len(timestamps), -1)

    order = _units_order(session, layout)
    module = session.create_processing_module(
        name=MODULE, description=f"LFADS results written by autolfads {__version__} from {output.name}; {config_text}"
    )
    unit_ids = ", ".join(str(int(u)) for u in np.asarray(layout["units"])[order])
    series = {
        "rates": (
            stacked("rates")[:, order] / bin_s,
            "Hz",
            f"LFADS inferred firing rates (posterior mean) at the centres of {layout['bin_ms']} ms bins; "
            f"columns: units {unit_ids} of the Units table",
        ),
        "factors": (stacked("factors"), "a.u.", "LFADS latent factors (posterior mean)"),
    }
    if all("gen_inputs" in fields[split] and fields[split]["gen_inputs"].shape[-1] for split in fields):
        series["inferred_inputs"] = (
            stacked("gen_inputs"),
            "a.u.",
            "LFADS inferred inputs: the controller's outputs to the generator (posterior mean)",
        )
    for name, (values, unit, description) in series.items():
        module.add(TimeSeries(name=name, data=values, unit=unit, timestamps=timestamps, description=description))
    module.add(_trials_table(rows, layout, trial_bins * bin_s))


def _units_order(session, layout: dict) -> np.ndarray:
    """The training file's units (held-in, then held-out) put back in the session's Units table order."""
    unit_row = {int(unit): i for i, unit in enumerate(session.units.id[:])}
    missing = [int(unit) for unit in layout["units"] if int(unit) not in unit_row]
    if missing:
        raise DataError(f"the session's Units table has no unit {missing[0]}, which the training file holds")
    return np.argsort([unit_row[int(unit)] for unit in layout["units"]])


def _trials_table(rows: dict, layout: dict, window: float):
    from pynwb.epoch import TimeIntervals

    trials = TimeIntervals(
        name="trials",
        description=f"the exported trials' windows ({layout['window_ms'][0]}..{layout['window_ms'][1]} ms "
        f"around {layout['align']})",
    )
    trials.add_column(name="trial_id", description="the trial's id in the session's trials table")
    trials.add_column(name="split", description="LFADS split: train, valid or test")
    for start, trial, split in zip(rows["start"], rows["id"], rows["split"]):
        trials.add_interval(
            start_time=float(start), stop_time=float(start + window), trial_id=int(trial), split=str(split)
        )
    return trials
