"""`autolfads train` (also the seed images' form `IMAGE --data D --checkpoint C --config-file F`) and
`autolfads sample`: one model, trained or resumed, and its posterior sampled into an output file."""

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..layout import CONFIG_FILE, KATIB_CHECKPOINT_DIR, RUN_LOG
from .options import EXAMPLES, add_command

if TYPE_CHECKING:
    from ..config import Config
    from ..sizing import DataShape

# A command line that starts with one of these is `train` (the older tools' images took no sub-command).
SEED_TRAIN_OPTIONS = ("--data", "--checkpoint", "--config-file")


def add_train(commands: argparse._SubParsersAction) -> None:
    train = add_command(
        commands,
        "train",
        run_train,
        help="train (or resume) one LFADS model",
        description="Train one LFADS model, or continue the one in --checkpoint. Trailing KEY VALUE pairs override the "
        "config, in our schema (train.lr_init 0.003) or lfads-tf2's (TRAIN.LR.INIT 0.003). Every epoch prints "
        "name=value metric lines on stdout (Katib's StdOut metrics collector reads them).",
        epilog="example: autolfads train --data data/lorenz.h5 --checkpoint runs/lorenz "
        "--config-file examples/configs/lorenz.yaml model.dropout_rate 0.1",
    )
    train.set_defaults(takes_overrides=True)
    train.add_argument(
        "--data",
        type=Path,
        help="HDF5 data file, a folder or a glob; several files are sessions of one stitched model "
        "(data.prefix selects in a folder); default: data.dir of the config",
    )
    train.add_argument(
        "--checkpoint",
        type=Path,
        default=Path(KATIB_CHECKPOINT_DIR),
        help=f"run folder: checkpoints, logs, outputs (default {KATIB_CHECKPOINT_DIR}, as in the Katib container)",
    )
    train.add_argument(
        "--config-file",
        type=Path,
        help="YAML config, our schema or lfads-tf2's; default: the run folder's config.yaml, else the built-in "
        "defaults sized from the data (printed; `autolfads config init --data DATA` writes them to edit)",
    )
    train.add_argument(
        "--epochs",
        type=int,
        help="train exactly this many more epochs and return (one PBT generation); "
        "default: until early stopping or max_epochs",
    )
    outputs = train.add_mutually_exclusive_group()
    outputs.add_argument(
        "--output",
        dest="write_outputs",
        action="store_true",
        default=None,
        help="always write lfads_output.h5 at the end",
    )
    outputs.add_argument(
        "--no-output",
        dest="write_outputs",
        action="store_false",
        help="never write lfads_output.h5 (default: write it once training is complete)",
    )
    train.add_argument("--quiet", action="store_true", help="do not print the per-epoch name=value metric lines")
    train.add_argument(
        "--no-report", dest="report", action="store_false", help="do not write report.html when training completes"
    )


def add_sample(commands: argparse._SubParsersAction) -> None:
    sample = add_command(
        commands,
        "sample",
        run_sample,
        help="write posterior-sampled rates and latents from a checkpoint",
        description="Sample the best (else last) checkpoint's posterior into an LFADS output file.",
        epilog="examples:\n  autolfads sample --checkpoint runs/lorenz\n  autolfads sample --checkpoint "
        "runs/search/best_model --data data/other_session.h5 --output rates.h5 --num-samples 200",
        formatter_class=EXAMPLES,
    )
    sample.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="run folder written by `autolfads train` (or a search's best_model/; its ensemble/ averages the members)",
    )
    sample.add_argument("--data", type=Path, help="data to sample (default: the data the model was trained on)")
    sample.add_argument("--output", type=Path, help="output file (default: CHECKPOINT/lfads_output.h5)")
    sample.add_argument("--num-samples", type=int, help="posterior samples per trial (default: train.num_samples, 50)")


def run_train(args: argparse.Namespace, overrides: list[str]) -> int:
    from ..train.run import train

    config_file = args.config_file
    if config_file is None and (args.checkpoint / CONFIG_FILE).exists():
        config_file = args.checkpoint / CONFIG_FILE
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    config = run_config(config_file, args.data, overrides)
    result = train(
        config,
        args.data,
        args.checkpoint,
        epochs=args.epochs,
        write_outputs=args.write_outputs,
        echo=None if args.quiet else print,
    )
    for output in result.outputs:
        print(f"# output: {output}", file=sys.stderr)
    if args.report and (result.complete or result.outputs):
        report = write_run_report(args.checkpoint)
        if report is not None:
            print(f"# report: {report}", file=sys.stderr)
    return 0


def run_config(config_file: Path | None, data: Path | None, overrides: list[str]) -> "Config":
    """The config file's settings, else the built-in defaults sized from the data (said on stderr); then the
    command line's overrides, which win over both."""
    from ..config import apply_overrides, load_config
    from ..sizing import describe_sizing

    if config_file is not None:
        return apply_overrides(load_config(config_file), overrides)
    shape, config = sized_config(data, overrides)
    print(describe_sizing(shape, config), file=sys.stderr)
    return config


def sized_config(data: Path | None, overrides: list[str]) -> tuple["DataShape", "Config"]:
    """The data's shape, read with the overrides' data options (held-out neurons, forward bins, prefix, ...),
    and the defaults sized to it with the overrides applied on top."""
    from ..config import Config, apply_overrides
    from ..sizing import config_for_data, shape_of
    from ..train.run import load_run_data

    given = apply_overrides(Config(), overrides)  # a bad override is reported before the data is read
    _, sessions = load_run_data(given, data)
    shape = shape_of(sessions)
    return shape, apply_overrides(config_for_data(shape, given), overrides)


def write_run_report(folder: Path) -> Path | None:
    """report.html of a run that completed or was sampled; a failure is logged in train.log, not raised."""
    from ..report.build import report_at_end  # matplotlib is imported only when a report is made
    from ..train.records import RunLog

    return report_at_end(folder, RunLog(folder / RUN_LOG))


def run_sample(args: argparse.Namespace, _: list[str]) -> int:
    from ..search.ensemble import ENSEMBLE_FILE, sample_ensemble
    from ..train.run import sample

    # a search's ensemble/ folder: its members sampled and their rates averaged
    sampler = sample_ensemble if (args.checkpoint / ENSEMBLE_FILE).is_file() else sample
    for path in sampler(args.checkpoint, args.data, args.output, args.num_samples):
        print(path)
    return 0
