"""The top-level parser and dispatch: `main` parses the command line and runs the chosen command's handler.

Each command family lives in its own module and registers its commands with `add_<command>(commands)`;
building the parser imports no torch (handlers import what they need when they run).
"""

import argparse
import errno
import os
import sys
import traceback

from .. import __version__
from ..errors import AutoLFADSError, TrainingDiverged
from ..runtime import reuse_freed_memory, use_huge_pages
from . import config, doctor, kubeflow, results, search, slurm, train
from .data import add_data

DESCRIPTION = """The `autolfads` command: a thin layer over the Python API.

examples:
    autolfads data lorenz --out data/lorenz.h5
    autolfads train --data data/lorenz.h5 --checkpoint runs/lorenz --config-file examples/configs/lorenz.yaml
    autolfads train --data /share/data --checkpoint /share/output --config-file cfg.yaml --epochs 50 TRAIN.LR.INIT 0.003
    autolfads sample --checkpoint runs/lorenz
    autolfads search --data data/lorenz.h5 --config-file examples/configs/lorenz.yaml --workdir runs/search
    autolfads report runs/search                 # -> runs/search/report.html (train and search write it too)
    autolfads config init my_config.yaml         # a documented default config to edit (--tf2: lfads-tf2 keys)
    autolfads doctor                             # versions, devices, Ray, thread settings
    autolfads --debug report runs/search         # an error with its traceback, for a bug report
"""
# Set to 1 for tracebacks, as --debug does (e.g. for commands that a script or a container runs).
DEBUG_ENV = "AUTOLFADS_DEBUG"

# The commands in the order `autolfads --help` lists them.
COMMANDS = (
    train.add_train,
    search.add_search,
    train.add_sample,
    add_data,
    results.add_evaluate,
    results.add_export_nwb,
    results.add_report,
    config.add_config,
    doctor.add_doctor,
    kubeflow.add_kubeflow,
    slurm.add_slurm,
)


def main(argv: list[str] | None = None) -> int:
    use_huge_pages()  # before any handler imports torch
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in train.SEED_TRAIN_OPTIONS:
        argv = ["train", *argv]  # the TensorFlow tools' container form: `IMAGE --data D --checkpoint C --config-file F`
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    options = [item for item in unknown if item.startswith("--")]
    if options or (unknown and not args.takes_overrides):
        parser.error(f"unrecognized arguments: {' '.join(options or unknown)}")
    reuse_freed_memory()
    try:
        return args.handler(args, unknown)
    except KeyboardInterrupt:
        message = "autolfads: interrupted; the last checkpoint is intact, rerun the same command to continue"
        print(message, file=sys.stderr)
        return 130
    except Exception as err:  # every error is one line; --debug adds the traceback
        if args.debug or os.environ.get(DEBUG_ENV, "0") not in ("", "0"):
            traceback.print_exc()
        message, status = explain(err)
        print(message, file=sys.stderr)
        return status


def explain(err: Exception) -> tuple[str, int]:
    """The line an error is shown as, and the exit status: 2 for what the user can fix (an AutoLFADSError or
    the file system: a full disk, a missing permission), 3 for a diverged run, 1 for a bug."""
    if isinstance(err, TrainingDiverged):
        return f"autolfads: training diverged: {err}", 3
    if isinstance(err, AutoLFADSError):
        return f"autolfads: error: {err}", 2
    if isinstance(err, OSError):
        return f"autolfads: error: {os_problem(err)}", 2
    return (
        f"autolfads: internal error: {type(err).__name__}: {err} (a bug: please report it with the traceback that "
        f"--debug or {DEBUG_ENV}=1 shows)",
        1,
    )


def os_problem(err: OSError) -> str:
    """'PATH: No space left on device (ENOSPC)'; the message as it is when it names no file."""
    if err.filename is None or err.strerror is None:
        return str(err)
    code = f" ({errno.errorcode[err.errno]})" if err.errno in errno.errorcode else ""
    target = f" -> {err.filename2}" if err.filename2 is not None else ""
    return f"{err.filename}{target}: {err.strerror}{code}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autolfads", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"autolfads {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of an error, for bug reports (also {DEBUG_ENV}=1; accepted after the command too)",
    )
    parser.set_defaults(takes_overrides=False)  # train and search take trailing KEY VALUE config overrides
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(commands)
    return parser
