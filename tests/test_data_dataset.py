"""data/dataset.py: sessions and data folders. Sessions loaded from a folder, glob or file (bin counts and
file names checked); a folder written by our data commands trains as `--data FOLDER` (issue 25, item 4): the
targets, true rates and outputs our commands write beside a data file are never taken as sessions; and a file
that marks its NaN entries as missing bins trains without train.sbtt, saying so in one line."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from autolfads.cli import main
from autolfads.config import load_config
from autolfads.data.dataset import find_data_files, load_data, load_sessions
from autolfads.data.hdf5 import KIND_ATTR, MISSING_BINS_ATTR, write_lfads_h5
from autolfads.data.synthetic import make_lorenz
from autolfads.errors import DataError
from conftest import tiny_overrides
from data_files import NEURONS, write_missing_bins_file, write_sessions, write_spike_tables
from test_data_nwb import run_error as error

SPIKES_OPTIONS = ["--align", "go", "--window", "-200", "500", "--bin-ms", "20", "--valid-fraction", "0.25"]


def run(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.err


def train_one_epoch(capsys, data: Path, folder: Path) -> str:
    return run(
        capsys,
        "train",
        "--data",
        data,
        "--checkpoint",
        folder,
        "--epochs",
        "1",
        "--quiet",
        "--no-report",
        *tiny_overrides(),
    )


@pytest.fixture
def share(tmp_path, capsys) -> Path:
    """share/data as `data spikes --out share/data/session.h5 --heldout-fraction ...` leaves it: the training
    file and session_targets.h5 beside it."""
    spikes, trials = write_spike_tables(tmp_path / "tables")
    run(
        capsys,
        "data",
        "spikes",
        "--spikes",
        spikes,
        "--trials",
        trials,
        *SPIKES_OPTIONS,
        "--heldout-fraction",
        "0.25",
        "--out",
        tmp_path / "share" / "data" / "session.h5",
    )
    assert sorted(p.name for p in (tmp_path / "share" / "data").iterdir()) == ["session.h5", "session_targets.h5"]
    return tmp_path / "share"


def test_a_folder_of_our_data_commands_trains_as_data_folder(share, capsys):
    data = share / "data"
    with h5py.File(data / "session_targets.h5") as h5:
        assert h5.attrs[KIND_ATTR] == "nlb_targets"
    assert find_data_files(data) == [data / "session.h5"]
    assert find_data_files(str(data / "*.h5")) == [data / "session.h5"]  # a glob skips it too
    train_one_epoch(capsys, data, share / "output")
    config = load_config(share / "output" / "config.yaml")
    assert Path(config.data.dir) == (data / "session.h5").resolve() and config.model.sessions == []
    assert (share / "output" / "last.ckpt").is_file()


@pytest.mark.slow
def test_the_seeds_folder_form_with_nwb_and_nlb_synthetic(tmp_path, capsys):
    """The container form: nlb-synthetic's NWB and true rates, `data nwb`'s file and targets, one folder."""
    pytest.importorskip("pynwb", reason="NWB files need pynwb: pip install 'autolfads[nlb]'")
    data = tmp_path / "share" / "data"
    run(capsys, "data", "nlb-synthetic", "--out", data / "synthetic.nwb")
    run(
        capsys,
        "data",
        "nwb",
        "--nwb",
        data / "synthetic.nwb",
        "--align",
        "move_onset_time",
        "--window",
        "-250",
        "450",
        "--bin-ms",
        "20",
        "--heldout-column",
        "heldout",
        "--split-column",
        "split",
        "--out",
        data / "mc.h5",
    )
    assert {p.name for p in data.iterdir()} == {"synthetic.nwb", "synthetic_truth.h5", "mc.h5", "mc_targets.h5"}
    train_one_epoch(capsys, data, tmp_path / "share" / "output")
    run(
        capsys,
        "sample",
        "--checkpoint",
        tmp_path / "share" / "output",
        "--output",
        data / "rates.h5",
        "--num-samples",
        "2",
    )
    assert find_data_files(data) == [data / "mc.h5"]  # the model's output written into the folder: no session


def test_targets_files_written_before_the_attribute_are_known_by_name(share, capsys):
    data = share / "data"
    with h5py.File(data / "session_targets.h5", "a") as h5:
        del h5.attrs[KIND_ATTR]
    assert find_data_files(data) == [data / "session.h5"]
    (data / "session.h5").unlink()
    err = error(capsys, "train", "--data", data, "--checkpoint", share / "output", *tiny_overrides())
    assert (
        f"no LFADS data file in {data} (prefix ''), only session_targets.h5 (NLB evaluation targets (by its name))"
        in err
    )
    err = error(capsys, "train", "--data", data / "session_targets.h5", "--checkpoint", share / "o", *tiny_overrides())
    assert "session_targets.h5 holds NLB evaluation targets (by its name), not training data" in err


def test_files_marked_as_something_else_are_no_sessions(tmp_path):
    lorenz = tmp_path / "lorenz.h5"
    assert main(["data", "lorenz", "--out", str(lorenz), "--n-conditions", "4", "--trials-per-condition", "4"]) == 0
    for kind in ("truth", "lfads_output", "nlb_submission", "recording"):
        write_lfads_h5(tmp_path / f"{kind}.h5", {"x": np.zeros(3)}, {KIND_ATTR: kind})
    assert find_data_files(tmp_path) == [lorenz]


# ------------------------------------------------------------------------------------------------ missing bins
def test_a_file_that_marks_missing_bins_loads_them_as_missing(tmp_path):
    path, nans = write_missing_bins_file(tmp_path / "marked.h5", marked=True)
    data = load_data(path)
    assert data.missing_bins == nans > 0
    assert int(data.train.recon.isnan().sum()) + int(data.valid.recon.isnan().sum()) == nans  # targets: missing
    assert not data.train.encod.isnan().any()  # inputs: 0
    with pytest.raises(
        DataError,
        match=rf"'train_data' holds \d+ NaN values .*train.sbtt is true or the file's "
        rf"attribute {MISSING_BINS_ATTR} says so",
    ):
        load_data(write_missing_bins_file(tmp_path / "unmarked.h5", marked=False)[0])
    assert load_data(tmp_path / "unmarked.h5", allow_nan=True).missing_bins == 0  # train.sbtt: no mark to report


def test_marked_missing_bins_train_without_a_flag_and_say_so(tmp_path, capsys):
    path, nans = write_missing_bins_file(tmp_path / "marked.h5", marked=True)
    err = train_one_epoch(capsys, path, tmp_path / "run")
    notes = [line for line in err.splitlines() if "missing bins:" in line]
    assert len(notes) == 1 and f"marked.h5 ({nans} NaN entries)" in notes[0] and "masks them (SBTT)" in notes[0]
    assert "missing bins:" in (tmp_path / "run" / "train.log").read_text()
    unmarked, _ = write_missing_bins_file(tmp_path / "unmarked.h5", marked=False)
    err = error(capsys, "train", "--data", unmarked, "--checkpoint", tmp_path / "refused", *tiny_overrides())
    assert "unmarked.h5: 'train_data' holds" in err and "train.sbtt" in err


@pytest.fixture(scope="module")
def sessions_dir(tmp_path_factory) -> Path:
    return write_sessions(tmp_path_factory.mktemp("sessions") / "data")


# ---------------------------------------------------------------- data and config


def test_load_sessions_from_folder_glob_and_file(sessions_dir):
    folder = load_sessions(sessions_dir)
    assert [s.name for s in folder] == ["session_0", "session_1", "session_2"]
    assert [s.recon_dim for s in folder] == list(NEURONS)
    assert [s.name for s in load_sessions(sessions_dir / "session_[02].h5")] == ["session_0", "session_2"]
    assert [s.name for s in load_sessions(sessions_dir, prefix="session_1")] == ["session_1"]
    assert folder[0].train.conditions is not None and set(folder[0].train.conditions) == set(range(6))
    with pytest.raises(DataError, match="no data file matches"):
        load_sessions(sessions_dir / "nothing_*.h5")


def test_sessions_with_different_bin_counts_are_refused(tmp_path):
    folder = write_sessions(tmp_path / "data", neurons=(5, 6))
    arrays = make_lorenz(n_conditions=6, trials_per_condition=5, n_neurons=7, seq_len=25, seed=3)
    write_lfads_h5(folder / "session_9.h5", arrays)
    with pytest.raises(DataError, match="same time bins") as info:
        load_sessions(folder)
    assert "session_0.h5 has 20" in str(info.value) and "session_9.h5 has 25" in str(info.value)


def test_sessions_need_distinct_file_names(tmp_path):
    for day in ("day1", "day2"):
        write_sessions(tmp_path / day, neurons=(5,))
    with pytest.raises(DataError, match="distinct names"):
        load_sessions(tmp_path / "day*" / "session_0.h5")
