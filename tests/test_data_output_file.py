"""data/output_file.py: the one writer and reader of lfads_output.h5."""

import h5py
import numpy as np
import pytest

from autolfads.data.hdf5 import KIND_ATTR
from autolfads.data.output_file import read_output, write_output_file
from autolfads.errors import DataError


def splits():
    rng = np.random.default_rng(0)
    return {
        "train": {
            "rates": rng.random((3, 4, 5), dtype=np.float32),
            "factors": rng.random((3, 4, 2)),
            "inds": np.arange(3),
        },
        "valid": {"rates": rng.random((2, 4, 5), dtype=np.float32), "inds": np.array([7, 3])},
    }


def test_a_written_output_reads_back_field_by_field_with_its_attributes(tmp_path):
    path = write_output_file(tmp_path / "out.h5", splits(), {"num_samples": 50, "session": "s1"})
    read = read_output(path)
    assert set(read.splits) == {"train", "valid"} and set(read.splits["train"]) == {"rates", "factors", "inds"}
    for split, fields in splits().items():
        for name, value in fields.items():
            np.testing.assert_array_equal(read.field(split, name), value)
            assert read.field(split, name).dtype == value.dtype
    assert read.attrs == {"num_samples": 50, "session": "s1", KIND_ATTR: "lfads_output"}
    assert type(read.attrs["num_samples"]) is int  # plain values, not numpy scalars
    with h5py.File(path) as h5:
        assert set(h5) == set(read.arrays())  # the names it was written with


def test_fields_asked_for_are_read_with_the_trial_ids_and_missing_ones_left_out(tmp_path):
    read = read_output(write_output_file(tmp_path / "out.h5", splits(), {}), ("rates", "factors"))
    assert set(read.splits["train"]) == {"rates", "factors", "inds"} and set(read.splits["valid"]) == {"rates", "inds"}


def test_files_that_are_not_outputs_are_named(tmp_path):
    with pytest.raises(DataError, match=r"absent.h5 does not exist"):
        read_output(tmp_path / "absent.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DataError, match=r"text.h5: cannot read as HDF5"):
        read_output(tmp_path / "text.h5")
    with h5py.File(tmp_path / "data.h5", "w") as h5:
        h5["train_encod_data"] = np.zeros((2, 3, 4))
    with pytest.raises(DataError, match=r"data.h5: no \*_rates in the file: not an LFADS output"):
        read_output(tmp_path / "data.h5")
    with h5py.File(tmp_path / "noinds.h5", "w") as h5:
        h5["valid_rates"] = np.ones((2, 3, 4))
    with pytest.raises(DataError, match=r"'valid_rates' has no 'valid_inds'"):
        read_output(tmp_path / "noinds.h5")
