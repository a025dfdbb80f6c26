"""data/nlb.py (`autolfads data nlb --nwb`): bad NLB sessions and options refused in one line. Missing trials
or units columns, a data set name or neuron counts that do not match, a bin size that does not divide the window,
a missing file, and nlb_tools missing."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nlb_tools", reason="NLB tests need nlb_tools: pip install --no-deps nlb-tools==0.0.4")
from autolfads.cli import main  # noqa: E402
from autolfads.data.nlb_synthetic import write_nlb_synthetic  # noqa: E402

# A small synthetic session: 4 conditions x 8 trials (6 train / 1 val / 1 test each), 20 + 6 neurons.
SMALL_SESSION = {"conditions": 4, "trials_per_condition": 8, "heldin": 20, "heldout": 6}


# ---------------------------------------------------------------------------------------------------------------
# Bad NWB input and options: one-line errors, exit code 2


def write_nwb(
    path: Path,
    trial_columns: dict[str, list],
    behavior: str | None = "hand_vel",
    units: int = 6,
    description: str = "a recording",
) -> Path:
    """A small NWB file with NLB's units table (spike_times, obs_intervals, heldout) and the given trials columns."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    nwb = NWBFile(
        session_description=description, identifier="test", session_start_time=datetime(2021, 1, 1, tzinfo=timezone.utc)
    )
    nwb.add_unit_column(name="heldout", description="held out")
    for unit in range(units):
        nwb.add_unit(
            spike_times=np.sort(np.random.default_rng(unit).uniform(0, 4, 40)),
            obs_intervals=[[0.0, 4.0]],
            heldout=unit >= units - 2,
        )
    for name in trial_columns:
        nwb.add_trial_column(name=name, description=name)
    for trial in range(4):
        nwb.add_trial(
            start_time=float(trial),
            stop_time=trial + 1.0,
            **{name: values[trial] for name, values in trial_columns.items()},
        )
    if behavior:
        nwb.create_processing_module(name="behavior", description="behaviour").add(
            TimeSeries(name=behavior, data=np.zeros((4000, 2)), unit="mm/s", rate=1000.0)
        )
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


MAZE_COLUMNS = {
    "split": ["train", "train", "val", "test"],
    "move_onset_time": [0.4, 1.4, 2.4, 3.4],
    "trial_type": [0, 1, 0, 1],
    "trial_version": [0] * 4,
}


@pytest.fixture(scope="module")
def synthetic_nwb(tmp_path_factory) -> Path:
    nwb, _ = write_nlb_synthetic(tmp_path_factory.mktemp("nwb") / "session.nwb", **SMALL_SESSION)
    return nwb


def data_nlb_error(capsys, nwb: Path, dataset: str = "mc_maze", bin_ms: int = 20) -> str:
    code = main(
        [
            "data",
            "nlb",
            "--dataset",
            dataset,
            "--nwb",
            str(nwb),
            "--bin-ms",
            str(bin_ms),
            "--out",
            str(nwb.with_name("out.h5")),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("autolfads: error: "), err
    assert not nwb.with_name("out.h5").exists()
    return err


def test_nwb_without_required_trials_columns(tmp_path, capsys):
    columns = {key: value for key, value in MAZE_COLUMNS.items() if key != "move_onset_time"}
    nwb = write_nwb(tmp_path / "no_onset.nwb", columns)
    err = data_nlb_error(capsys, nwb)
    assert "no_onset.nwb: the trials table has no column 'move_onset_time', which mc_maze needs" in err


def test_nwb_without_units_heldout_column(tmp_path, capsys):
    from pynwb import NWBHDF5IO, NWBFile

    nwb = NWBFile(session_description="x", identifier="x", session_start_time=datetime(2021, 1, 1, tzinfo=timezone.utc))
    nwb.add_unit(spike_times=[0.1, 0.2], obs_intervals=[[0.0, 1.0]])
    with NWBHDF5IO(str(tmp_path / "units.nwb"), "w") as io:
        io.write(nwb)
    assert "units.nwb: the units table has no 'heldout' column" in data_nlb_error(capsys, tmp_path / "units.nwb")


@pytest.mark.parametrize(
    "dataset, message",
    [
        (
            "dmfc_rsg",
            "the trials table has no column 'set_time', which dmfc_rsg needs (the file fits mc_maze / mc_maze_large / "
            "mc_maze_medium / mc_maze_small: is --dataset right?)",
        ),
        ("mc_rtt", "no behaviour TimeSeries 'finger_vel', which mc_rtt needs"),
        ("area2_bump", "the trials table has no column 'cond_dir', which area2_bump needs"),
    ],
)
def test_dataset_name_that_does_not_match_the_file(synthetic_nwb, capsys, dataset, message):
    err = data_nlb_error(capsys, synthetic_nwb, dataset)
    assert str(synthetic_nwb) in err and message in err


def test_neuron_counts_must_be_the_data_sets(tmp_path, capsys):
    nwb = write_nwb(tmp_path / "maze.nwb", MAZE_COLUMNS, units=6)
    assert "maze.nwb: 4 held-in of 6 units, but mc_maze_small has 107 of 142; is --dataset right?" in data_nlb_error(
        capsys, nwb, "mc_maze_small"
    )


@pytest.mark.parametrize(
    "bin_ms, message",
    [
        (15, "--bin-ms 15: 15 ms does not divide mc_maze's 700 ms trial window (-250..450 ms around move_onset_time)"),
        (0, "--bin-ms must be a positive"),
    ],
)
def test_bin_size_must_divide_the_window(synthetic_nwb, capsys, bin_ms, message):
    assert message in data_nlb_error(capsys, synthetic_nwb, bin_ms=bin_ms)


def test_missing_nwb_file(tmp_path, capsys):
    assert f"NWB file {tmp_path / 'none.nwb'} does not exist" in data_nlb_error(capsys, tmp_path / "none.nwb")


def test_missing_nlb_tools_says_how_to_install(synthetic_nwb, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "nlb_tools", None)  # import nlb_tools now raises ImportError
    err = data_nlb_error(capsys, synthetic_nwb)
    assert "pip install --no-deps nlb-tools==0.0.4" in err and "'pandas<3'" in err
