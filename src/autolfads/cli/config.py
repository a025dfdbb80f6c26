"""`autolfads config show | init`: the documented default config, in our schema or lfads-tf2's keys."""

import argparse
from pathlib import Path

from .options import EXAMPLES, add_command


def add_config(commands: argparse._SubParsersAction) -> None:
    config = commands.add_parser(
        "config",
        help="print or write a documented default config",
        description="The default configuration with every key documented, in our schema or (--tf2) lfads-tf2's "
        "MODEL/TRAIN keys.",
        epilog="examples:\n  autolfads config show\n  autolfads config init my_config.yaml --tf2\n"
        "  autolfads train --config-file my_config.yaml --data data/lorenz.h5 --checkpoint runs/mine",
        formatter_class=EXAMPLES,
    )
    actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = add_command(
        actions,
        "show",
        run_show,
        help="print the documented default config",
        description="Print the documented default config.",
        epilog="example: autolfads config show --tf2",
    )
    init = add_command(
        actions,
        "init",
        run_init,
        help="write the documented default config to FILE",
        description="Write the documented default config to FILE (never over an existing file unless --force).",
        epilog="example: autolfads config init my_config.yaml && autolfads train --config-file my_config.yaml "
        "--data data/lorenz.h5 --checkpoint runs/mine",
    )
    init.add_argument("file", type=Path, metavar="FILE", help="YAML file to write")
    init.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    for sub in (show, init):
        sub.add_argument("--tf2", action="store_true", help="lfads-tf2 keys (MODEL.*, TRAIN.*) instead of our schema")


def run_show(args: argparse.Namespace, _: list[str]) -> int:
    from ..config_template import default_config_text

    print(default_config_text(args.tf2), end="")
    return 0


def run_init(args: argparse.Namespace, _: list[str]) -> int:
    from ..config_template import write_default_config

    print(write_default_config(args.file, args.tf2, args.force))
    return 0
