"""`autolfads data lorenz | chaotic-rnn | nlb-synthetic | multisession | calcium`: synthetic sets with ground
truth, each maker's keyword-only parameters its options."""

import argparse
import inspect
from pathlib import Path

from ..data import calcium_synthetic, multisession_synthetic, nlb_synthetic
from ..data.synthetic import SYNTHETIC_SETS, write_synthetic
from .options import EXAMPLES, add_command, add_keyword_options, keyword_values


def add_synthetic_sets(kinds: argparse._SubParsersAction) -> None:
    """One kind per single-session spike set (lorenz, chaotic-rnn), documented by its maker."""
    for kind, make in SYNTHETIC_SETS.items():
        sub = add_command(
            kinds,
            kind,
            run_synthetic_set,
            help=(inspect.getdoc(make) or "").split("\n")[0],
            description=inspect.getdoc(make),
            epilog=f"example: autolfads data {kind} --out data/{kind}.h5 --seed 1",
            formatter_class=EXAMPLES,
        )
        sub.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
        add_keyword_options(sub, make)
        sub.set_defaults(make_kind=kind)


def add_nlb_synthetic(kinds: argparse._SubParsersAction) -> None:
    synthetic = add_command(
        kinds,
        "nlb-synthetic",
        run_nlb_synthetic,
        help="a synthetic NLB session (NWB, mc_maze layout) with known rates",
        description=nlb_synthetic.__doc__,
        formatter_class=EXAMPLES,
    )
    synthetic.add_argument(
        "--out", type=Path, required=True, help="NWB file to write; its true rates go to NAME_truth.h5 beside it"
    )
    add_keyword_options(synthetic, nlb_synthetic.write_nlb_synthetic)


def add_multisession(kinds: argparse._SubParsersAction) -> None:
    sessions = add_command(
        kinds,
        "multisession",
        run_multisession,
        help="several sessions with shared Lorenz latents and different neurons (one file per session)",
        description=multisession_synthetic.__doc__,
        epilog="example: autolfads data multisession --out data/sessions --n-sessions 3 "
        "--neurons-per-session 25,30,35 --seed 1",
        formatter_class=EXAMPLES,
    )
    sessions.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder to write session_00.h5, session_01.h5, ... into (created if missing)",
    )
    add_keyword_options(sessions, multisession_synthetic.make_multisession)


def add_calcium(kinds: argparse._SubParsersAction) -> None:
    calcium = add_command(
        kinds,
        "calcium",
        run_calcium,
        help="a calcium-imaging-like signal (fluorescence or deconvolved events) from Lorenz-driven spikes",
        description=calcium_synthetic.__doc__,
        epilog="examples:\n  autolfads data calcium --out data/calcium.h5 --tau-ms 200 --noise-std 0.1 --seed 1\n"
        "  autolfads data calcium --out data/events.h5 --signal events",
        formatter_class=EXAMPLES,
    )
    calcium.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    add_keyword_options(calcium, calcium_synthetic.make_calcium)


def run_synthetic_set(args: argparse.Namespace, _: list[str]) -> int:
    print(write_synthetic(args.make_kind, args.out, **keyword_values(args, SYNTHETIC_SETS[args.make_kind])))
    return 0


def run_nlb_synthetic(args: argparse.Namespace, _: list[str]) -> int:
    options = keyword_values(args, nlb_synthetic.write_nlb_synthetic)
    print("\n".join(map(str, nlb_synthetic.write_nlb_synthetic(args.out, **options))))
    return 0


def run_multisession(args: argparse.Namespace, _: list[str]) -> int:
    options = keyword_values(args, multisession_synthetic.make_multisession)
    paths = multisession_synthetic.write_multisession(args.out, **options)
    print(args.out)
    for path in paths:
        print(f"  {path}")
    return 0


def run_calcium(args: argparse.Namespace, _: list[str]) -> int:
    print(calcium_synthetic.write_calcium(args.out, **keyword_values(args, calcium_synthetic.make_calcium)))
    return 0
