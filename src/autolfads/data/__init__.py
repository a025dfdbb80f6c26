"""LFADS data: HDF5 reading/writing and synthetic data sets with ground truth."""

from autolfads.data.calcium_synthetic import make_calcium, write_calcium
from autolfads.data.dataset import SPLIT_NAMES, LFADSData, Split, check_sessions
from autolfads.data.hdf5 import (
    RECONSTRUCTIONS,
    find_data_file,
    find_data_files,
    load_data,
    load_sessions,
    write_lfads_h5,
)
from autolfads.data.multisession_synthetic import make_multisession, write_multisession
from autolfads.data.synthetic import SYNTHETIC_SETS, make_chaotic_rnn, make_lorenz, write_synthetic

__all__ = [
    "RECONSTRUCTIONS",
    "SPLIT_NAMES",
    "SYNTHETIC_SETS",
    "LFADSData",
    "Split",
    "check_sessions",
    "find_data_file",
    "find_data_files",
    "load_data",
    "load_sessions",
    "make_calcium",
    "make_chaotic_rnn",
    "make_lorenz",
    "make_multisession",
    "write_calcium",
    "write_lfads_h5",
    "write_multisession",
    "write_synthetic",
]
