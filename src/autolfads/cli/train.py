"""`autolfads train` (also the seed images' form `IMAGE --data D --checkpoint C --config-file F`) and
`autolfads sample`: one model, trained or resumed, and its posterior sampled into an output file."""

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from ..layout import CONFIG_FILE, KATIB_CHECKPOINT_DIR, RUN_LOG
from .options import EXAMPLES, add_command

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
        help="YAML config, our schema or lfads-tf2's; default: the run folder's config.yaml, else built-in defaults",
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
    sample.add_argument("--checkpoint", type=Path, required=True, help="run folder written by `autolfads train`")
    sample.add_argument("--data", type=Path, help="data to sample (default: the data the model was trained on)")
    sample.add_argument("--output", type=Path, help="output file (default: CHECKPOINT/lfads_output.h5)")
    sample.add_argument("--num-samples", type=int, help="posterior samples per trial (default: train.num_samples, 50)")


def run_train(args: argparse.Namespace, overrides: list[str]) -> int:
    from ..config import Config, apply_overrides, load_config
    from ..train.run import train

    config_file = args.config_file
    if config_file is None and (args.checkpoint / CONFIG_FILE).exists():
        config_file = args.checkpoint / CONFIG_FILE
    config = load_config(config_file) if config_file else Config()
    config = apply_overrides(config, overrides)
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
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


def write_run_report(folder: Path) -> Path | None:
    """report.html of a run that completed or was sampled; a failure is logged in train.log, not raised."""
    from ..report.build import report_at_end  # matplotlib is imported only when a report is made
    from ..train.records import RunLog

    return report_at_end(folder, RunLog(folder / RUN_LOG))


def run_sample(args: argparse.Namespace, _: list[str]) -> int:
    from ..train.run import sample

    for path in sample(args.checkpoint, args.data, args.output, args.num_samples):
        print(path)
    return 0
