"""`autolfads data KIND`: every way to make a training file, one `add_<kind>(kinds)` per kind.

Synthetic sets with ground truth (`data_synthetic`), recordings brought in (`data_recordings`: NLB, NWB,
plain spike times) and continuous recordings chopped into trials and merged back (`data_continuous`).
"""

import argparse

from . import data_continuous, data_recordings, data_synthetic
from .options import EXAMPLES

# The kinds in the order `autolfads data --help` lists them.
KINDS = (
    data_synthetic.add_synthetic_sets,
    data_recordings.add_nlb,
    data_synthetic.add_nlb_synthetic,
    data_recordings.add_nwb,
    data_recordings.add_spikes,
    data_continuous.add_continuous,
    data_continuous.add_chop,
    data_continuous.add_merge,
    data_synthetic.add_multisession,
    data_synthetic.add_calcium,
)


def add_data(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser(
        "data",
        help="make data sets",
        description="Write synthetic data sets with ground truth in the LFADS HDF5 layout.",
        epilog="examples:\n  autolfads data lorenz --out data/lorenz.h5\n"
        "  autolfads data chaotic-rnn --out data/rnn.h5 --n-conditions 20 --seed 1",
        formatter_class=EXAMPLES,
    )
    kinds = data.add_subparsers(dest="kind", metavar="KIND", required=True)
    for add_kind in KINDS:
        add_kind(kinds)
