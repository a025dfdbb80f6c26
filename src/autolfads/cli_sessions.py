"""`autolfads data nwb | spikes` (your own recordings in) and `autolfads export-nwb` (results back out)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .data import session


def add_session_parsers(commands: argparse._SubParsersAction, kinds: argparse._SubParsersAction) -> None:
    from .data import nwb, spikes

    fmt = argparse.RawDescriptionHelpFormatter
    from_nwb = kinds.add_parser(
        "nwb",
        help="any NWB session: spike times binned in its trials -> training file + targets",
        description=f"{nwb.__doc__}\n{session.__doc__}",
        formatter_class=fmt,
    )
    from_nwb.add_argument(
        "--nwb", type=Path, required=True, help="the NWB file (Units table with spike_times, a trials table)"
    )
    add_trial_options(from_nwb)
    from_nwb.set_defaults(handler=run_data_nwb)

    from_spikes = kinds.add_parser(
        "spikes",
        help="plain spike times (NPZ or CSV) and a trials CSV -> training file + targets",
        description=f"{spikes.__doc__}\n{session.__doc__}",
        formatter_class=fmt,
    )
    from_spikes.add_argument(
        "--spikes",
        type=Path,
        required=True,
        help="spike times: CSV with columns unit,time or NPZ with arrays unit and time (seconds)",
    )
    from_spikes.add_argument(
        "--trials",
        type=Path,
        required=True,
        help="trials CSV: start_time, stop_time and any alignment, split and condition columns (seconds)",
    )
    from_spikes.add_argument(
        "--units", type=Path, help="optional units CSV: a unit column and per-unit columns such as heldout"
    )
    add_trial_options(from_spikes)
    from_spikes.set_defaults(handler=run_data_spikes)

    from .data.nwb_export import __doc__ as export_doc

    export = commands.add_parser(
        "export-nwb",
        help="a copy of the NWB session with the inferred rates, factors and inputs",
        description=export_doc,
        formatter_class=fmt,
    )
    export.add_argument(
        "--output", type=Path, required=True, help="LFADS output file (lfads_output.h5 of train or sample)"
    )
    export.add_argument(
        "--nwb", type=Path, required=True, help="the NWB session the training file was made from (`data nwb`)"
    )
    export.add_argument("--data", type=Path, help="the training file (default: the output's data_file attribute)")
    export.add_argument(
        "--config",
        type=Path,
        help="the model's config.yaml, stored in the description (default: config.yaml beside the output)",
    )
    export.add_argument("--out", type=Path, required=True, help="NWB file to write")
    export.set_defaults(handler=run_export_nwb)


def add_trial_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--align", default="start_time", help="trials column the window is aligned to (default start_time)"
    )
    parser.add_argument(
        "--window",
        type=int,
        nargs=2,
        required=True,
        metavar=("START_MS", "END_MS"),
        help="trial bins: START_MS..END_MS around --align",
    )
    parser.add_argument("--bin-ms", type=int, required=True, help="bin width in ms")
    parser.add_argument(
        "--forward-ms", type=int, default=0, help="forward-prediction bins after the window, in ms (default 0)"
    )
    parser.add_argument(
        "--split-column",
        help="trials column with train / val (or valid) / test (none: left out); default: --valid-fraction",
    )
    parser.add_argument(
        "--valid-fraction",
        type=float,
        default=0.2,
        help="trials drawn (seeded) for validation when there is no --split-column (default 0.2)",
    )
    parser.add_argument(
        "--heldout-column", help="boolean units column: held-out units for co-smoothing (NLB files have 'heldout')"
    )
    parser.add_argument(
        "--heldout-fraction",
        type=float,
        default=0.0,
        help="units held out at random (seeded) for co-smoothing (default 0)",
    )
    parser.add_argument("--condition-column", help="trials column stored as each trial's condition")
    parser.add_argument(
        "--behavior",
        action="append",
        default=[],
        metavar="NAME",
        help="time series resampled to the bins as {split}_behavior (repeat for several)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the validation trials and held-out units (default 0)"
    )
    parser.add_argument("--out", type=Path, required=True, help="training file to write")
    parser.add_argument(
        "--targets", type=Path, help="evaluation targets file to write (default: OUT's name + _targets.h5)"
    )


def trial_options(args: argparse.Namespace) -> session.TrialOptions:
    return session.TrialOptions(
        window_ms=tuple(args.window),
        bin_ms=args.bin_ms,
        align=args.align,
        forward_ms=args.forward_ms,
        split_column=args.split_column,
        valid_fraction=args.valid_fraction,
        heldout_column=args.heldout_column,
        heldout_fraction=args.heldout_fraction,
        condition_column=args.condition_column,
        behavior=tuple(args.behavior),
        seed=args.seed,
    )


def run_data_nwb(args: argparse.Namespace, _: list[str]) -> int:
    from .data.nwb import prepare_nwb

    print(prepare_nwb(args.nwb, trial_options(args), args.out, args.targets).summary)
    return 0


def run_data_spikes(args: argparse.Namespace, _: list[str]) -> int:
    from .data.spikes import read_spikes

    recording = read_spikes(args.spikes, args.trials, args.units)
    print(session.prepare_session(recording, trial_options(args), args.out, args.targets).summary)
    return 0


def run_export_nwb(args: argparse.Namespace, _: list[str]) -> int:
    from .data.nwb_export import export_nwb

    print(export_nwb(args.output, args.nwb, args.out, data=args.data, config=args.config))
    return 0
