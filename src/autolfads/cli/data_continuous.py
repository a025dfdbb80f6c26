"""`autolfads data continuous | chop | merge`: continuous recordings (time x neurons) chopped into overlapping
trials for training and the model's outputs merged back into time series (see autolfads.data.continuous)."""

import argparse
import inspect
from pathlib import Path

from ..data import continuous
from .options import EXAMPLES, add_command, add_keyword_options, keyword_values


def add_continuous(kinds: argparse._SubParsersAction) -> None:
    synthetic = add_command(
        kinds,
        "continuous",
        run_continuous,
        help="a synthetic continuous recording (time x neurons) with true rates",
        description=inspect.getdoc(continuous.make_continuous),
        epilog="example: autolfads data continuous --out data/rec.h5 --n-bins 2000 --seed 1",
        formatter_class=EXAMPLES,
    )
    synthetic.add_argument("--out", type=Path, required=True, help="HDF5 file to write (keys data, truth, latents)")
    add_keyword_options(synthetic, continuous.make_continuous)


def add_chop(kinds: argparse._SubParsersAction) -> None:
    chop = add_command(
        kinds,
        "chop",
        run_chop,
        help="chop a continuous recording into overlapping LFADS trials",
        description=continuous.__doc__,
        epilog="example: autolfads data chop --input data/rec.h5 --key data --window 50 --overlap 10 "
        "--out data/rec_chops.h5",
        formatter_class=EXAMPLES,
    )
    chop.add_argument("--input", type=Path, required=True, help="HDF5 file holding the recording")
    chop.add_argument("--key", required=True, help="dataset of the recording, time x neurons")
    chop.add_argument("--window", type=int, required=True, help="segment length in bins")
    chop.add_argument(
        "--overlap", type=int, default=0, help="bins shared by consecutive segments, at most window / 2 (default 0)"
    )
    chop.add_argument("--truth-key", help="dataset of true rates chopped alongside (default: 'truth' if present)")
    chop.add_argument(
        "--valid-fraction", type=float, default=0.2, help="segments held out for validation (default 0.2)"
    )
    chop.add_argument("--seed", type=int, default=0, help="seed of the train/valid assignment (default 0)")
    chop.add_argument("--out", type=Path, required=True, help="LFADS training file to write")


def add_merge(kinds: argparse._SubParsersAction) -> None:
    merge = add_command(
        kinds,
        "merge",
        run_merge,
        help="merge an LFADS output of chopped data back into continuous time series",
        description=continuous.__doc__,
        epilog="example: autolfads data merge --output runs/rec/lfads_output.h5 --chops data/rec_chops.h5 "
        "--out runs/rec/merged.h5",
        formatter_class=EXAMPLES,
    )
    merge.add_argument(
        "--output", type=Path, required=True, help="LFADS output file (lfads_output.h5 of train or sample)"
    )
    merge.add_argument("--chops", type=Path, required=True, help="the chop file the model was trained on")
    merge.add_argument(
        "--out", type=Path, required=True, help="merged file to write: rates, factors, ... (time x dims)"
    )
    merge.add_argument(
        "--ramp", choices=continuous.RAMPS, default="linear", help="blending across overlaps (default linear)"
    )
    merge.add_argument("--power", type=float, default=2.0, help="exponent of the power ramp (default 2)")


def run_continuous(args: argparse.Namespace, _: list[str]) -> int:
    print(continuous.write_continuous(args.out, **keyword_values(args, continuous.make_continuous)))
    return 0


def run_chop(args: argparse.Namespace, _: list[str]) -> int:
    out = continuous.chop_file(
        args.input,
        args.key,
        args.window,
        args.overlap,
        args.out,
        truth_key=args.truth_key,
        valid_fraction=args.valid_fraction,
        seed=args.seed,
    )
    print(out)
    return 0


def run_merge(args: argparse.Namespace, _: list[str]) -> int:
    print(continuous.merge_file(args.output, args.chops, args.out, ramp=args.ramp, power=args.power))
    return 0
