"""`autolfads data multisession | calcium`: synthetic sets beyond one session of spike counts."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_options import add_keyword_options, keyword_values
from .data import calcium_synthetic, multisession_synthetic


def add_synthetic_parsers(kinds: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    sessions = kinds.add_parser(
        "multisession",
        help="several sessions with shared Lorenz latents and different neurons (one file per session)",
        description=multisession_synthetic.__doc__,
        epilog="example: autolfads data multisession --out data/sessions --n-sessions 3 --neurons-per-session 25,30,35 --seed 1",
        formatter_class=fmt,
    )
    sessions.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder to write session_00.h5, session_01.h5, ... into (created if missing)",
    )
    add_keyword_options(sessions, multisession_synthetic.make_multisession)
    sessions.set_defaults(handler=run_multisession)

    calcium = kinds.add_parser(
        "calcium",
        help="a calcium-imaging-like signal (fluorescence or deconvolved events) from Lorenz-driven spikes",
        description=calcium_synthetic.__doc__,
        epilog="examples:\n  autolfads data calcium --out data/calcium.h5 --tau-ms 200 --noise-std 0.1 --seed 1\n"
        "  autolfads data calcium --out data/events.h5 --signal events",
        formatter_class=fmt,
    )
    calcium.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    add_keyword_options(calcium, calcium_synthetic.make_calcium)
    calcium.set_defaults(handler=run_calcium)


def run_multisession(args: argparse.Namespace, _: list[str]) -> int:
    paths = multisession_synthetic.write_multisession(
        args.out, **keyword_values(args, multisession_synthetic.make_multisession)
    )
    print(args.out)
    for path in paths:
        print(f"  {path}")
    return 0


def run_calcium(args: argparse.Namespace, _: list[str]) -> int:
    print(calcium_synthetic.write_calcium(args.out, **keyword_values(args, calcium_synthetic.make_calcium)))
    return 0
