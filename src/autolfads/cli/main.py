"""The top-level parser and dispatch: `main` parses the command line and runs the chosen command's handler.

Each command family lives in its own module and registers its commands with `add_<command>(commands)`;
building the parser imports no torch (handlers import what they need when they run).
"""

import argparse
import sys

from .. import __version__
from ..errors import AutoLFADSError, TrainingDiverged
from ..runtime import reuse_freed_memory, use_huge_pages
from . import config, doctor, kubeflow, results, search, train
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
"""

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
    except TrainingDiverged as err:
        print(f"autolfads: training diverged: {err}", file=sys.stderr)
        return 3
    except AutoLFADSError as err:
        print(f"autolfads: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        message = "autolfads: interrupted; the last checkpoint is intact, rerun the same command to continue"
        print(message, file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autolfads", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"autolfads {__version__}")
    parser.set_defaults(takes_overrides=False)  # train and search take trailing KEY VALUE config overrides
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(commands)
    return parser
