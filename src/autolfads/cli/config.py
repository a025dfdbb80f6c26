"""`autolfads config show | init`: the documented default config, in our schema or lfads-tf2's keys; with
--data, the defaults sized from that data (what `train` and `search` use with no config file)."""

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..layout import CONFIG_FILE
from .options import EXAMPLES, add_command


def add_config(commands: argparse._SubParsersAction) -> None:
    config = commands.add_parser(
        "config",
        help="print or write a documented default config",
        description="The default configuration with every key documented, in our schema or (--tf2) lfads-tf2's "
        "MODEL/TRAIN keys.",
        epilog="examples:\n  autolfads config show\n  autolfads config init my_config.yaml --tf2\n"
        "  autolfads config init --data data/session.h5 session.yaml\n"
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
        description="Write the documented default config to FILE (never over an existing file unless --force); "
        "with --data, the defaults sized from that data, as `train` and `search` use them with no config file.",
        epilog="example: autolfads config init --data data/session.h5 session.yaml && autolfads train --config-file "
        "session.yaml --data data/session.h5 --checkpoint runs/mine",
    )
    init.add_argument(
        "file", type=Path, nargs="?", metavar="FILE", help=f"YAML file to write (with --data, default {CONFIG_FILE})"
    )
    init.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    for sub in (show, init):
        sub.add_argument("--tf2", action="store_true", help="lfads-tf2 keys (MODEL.*, TRAIN.*) instead of our schema")
        sub.add_argument(
            "--data",
            type=Path,
            help="size the model, batch and schedules from this data file, folder or glob (as train and search do "
            "with no --config-file)",
        )


def run_show(args: argparse.Namespace, _: list[str]) -> int:
    from ..config_template import default_config_text

    print(default_config_text(args.tf2, **sized_template(args.data)), end="")
    return 0


def run_init(args: argparse.Namespace, _: list[str]) -> int:
    from ..config_template import write_default_config

    if args.file is None and args.data is None:
        raise ConfigError("config init: name the FILE to write (or pass --data DATA to write config.yaml sized to it)")
    path = args.file or Path(CONFIG_FILE)
    print(write_default_config(path, args.tf2, args.force, **sized_template(args.data)))
    return 0


def sized_template(data: Path | None) -> dict:
    """The template's config, sized keys and notes for --data (none without it: the plain defaults)."""
    if data is None:
        return {}
    from ..sizing import describe_sizing, sized_values
    from .train import sized_config

    shape, config = sized_config(data, [])
    return {"config": config, "sized": sized_values(shape), "notes": [f"data: {data}", describe_sizing(shape, config)]}
