"""`autolfads data nlb | nwb | spikes`: recordings brought in as a training file plus evaluation targets."""

import argparse
from pathlib import Path

from ..data import nlb, nlb_datasets, nwb, session, spikes
from ..errors import ConfigError
from .options import EXAMPLES, add_command


def add_nlb(kinds: argparse._SubParsersAction) -> None:
    prepare = add_command(
        kinds,
        "nlb",
        run_nlb,
        help="an NLB data set from its NWB file(s): training file + evaluation targets",
        description=nlb.__doc__,
        formatter_class=EXAMPLES,
    )
    prepare.add_argument("--dataset", required=True, choices=list(nlb_datasets.DATASETS), help="NLB data set")
    source = prepare.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--nwb",
        type=Path,
        help="the data set's NWB file, or a folder of its NWB files (e.g. NLB's train and test files)",
    )
    source.add_argument(
        "--tensors",
        type=Path,
        nargs="+",
        help="nlb_tools' tensor file(s) instead (make_train_input_tensors, make_eval_input_tensors); "
        "see autolfads.data.nlb_tensors",
    )
    prepare.add_argument(
        "--eval-targets",
        type=Path,
        help="with --tensors: make_eval_target_tensors' file (held-out spikes, forward bins, behaviour of the "
        "eval trials)",
    )
    prepare.add_argument(
        "--valid-fraction",
        type=float,
        default=0.2,
        help="with --tensors, when the eval trials' held-out spikes are unknown: train trials drawn for validation "
        "(default 0.2)",
    )
    prepare.add_argument(
        "--seed", type=int, default=0, help="with --tensors: seed of those validation trials (default 0)"
    )
    prepare.add_argument("--bin-ms", type=int, default=5, help="bin width in ms (default 5; NLB scores 5 and 20)")
    prepare.add_argument("--out", type=Path, required=True, help="training file to write")
    add_targets_option(prepare)
    prepare.add_argument(
        "--truth",
        type=Path,
        help="true rates of a synthetic file (NAME_truth.h5 of `data nlb-synthetic`), stored as {split}_truth",
    )


def add_nwb(kinds: argparse._SubParsersAction) -> None:
    from_nwb = add_command(
        kinds,
        "nwb",
        run_nwb,
        help="any NWB session: spike times binned in its trials -> training file + targets",
        description=f"{nwb.__doc__}\n{session.__doc__}",
        formatter_class=EXAMPLES,
    )
    from_nwb.add_argument(
        "--nwb", type=Path, required=True, help="the NWB file (Units table with spike_times, a trials table)"
    )
    add_trial_options(from_nwb)


def add_spikes(kinds: argparse._SubParsersAction) -> None:
    from_spikes = add_command(
        kinds,
        "spikes",
        run_spikes,
        help="plain spike times (NPZ or CSV) and a trials CSV -> training file + targets",
        description=f"{spikes.__doc__}\n{session.__doc__}",
        formatter_class=EXAMPLES,
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


def add_trial_options(parser: argparse.ArgumentParser) -> None:
    """How spike times become trials of bins (session.TrialOptions), and the files written."""
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
    add_targets_option(parser)


def add_targets_option(parser: argparse.ArgumentParser) -> None:
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


def run_nlb(args: argparse.Namespace, _: list[str]) -> int:
    if args.tensors:
        from ..data.nlb_tensors import prepare_tensors

        if args.truth:
            raise ConfigError("--truth goes with --nwb (a synthetic NWB session), not --tensors")
        files = [args.out, args.targets, args.eval_targets]
        print(prepare_tensors(args.dataset, args.tensors, args.bin_ms, *files, args.valid_fraction, args.seed).summary)
        return 0
    if args.eval_targets:
        raise ConfigError("--eval-targets goes with --tensors; with --nwb the targets are made from the NWB file")
    print(nlb.prepare_nlb(args.dataset, args.nwb, args.bin_ms, args.out, args.targets, args.truth).summary)
    return 0


def run_nwb(args: argparse.Namespace, _: list[str]) -> int:
    print(nwb.prepare_nwb(args.nwb, trial_options(args), args.out, args.targets).summary)
    return 0


def run_spikes(args: argparse.Namespace, _: list[str]) -> int:
    files = spikes.prepare_spikes(args.spikes, args.trials, args.units, trial_options(args), args.out, args.targets)
    print(files.summary)
    return 0
