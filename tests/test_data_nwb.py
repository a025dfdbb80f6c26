"""Your own recordings in: `data nwb` (any NWB session) and `data spikes` (plain spike times), one binning core.

Spike times placed by hand land in the bins computed by hand; the two routes give the same files; bad input
is one clear error and writes nothing; the shared real MC_Maze_Small file (when present) bins as nlb_tools bins it.
"""

from __future__ import annotations

import csv
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("pynwb", reason="NWB tests need pynwb: pip install pynwb")
from autolfads.cli import main  # noqa: E402

SHARED_DATA = Path(
    os.environ.get("AUTOLFADS_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)
SHARED_NWB = SHARED_DATA / "sub-Jenkins_ses-small_desc-test_ecephys.nwb"
# 6 trials of 1 s; `go` 0.5 s into each; 4 units. Unit 0 fires at go + 5, 25, 35, 45 ms in every trial; unit 1
# exactly on the 10 ms edge (go + 10 ms: the later bin) and at go + 0.2 s (outside the window); unit 2 is
# observed only until 2.52 s (in trial 2: bins from 2.52 s on are missing); unit 3 fires once per trial at go - 1 ms.
GO = np.arange(6) + 0.5
SPIKES = {
    0: np.concatenate([g + np.array([0.005, 0.025, 0.035, 0.045]) for g in GO]),
    1: np.concatenate([g + np.array([0.010, 0.2]) for g in GO]),
    2: np.concatenate([g + np.array([0.015, 0.031]) for g in GO]),
    3: GO - 0.001,
}
SPLIT = ["train", "train", "train", "val", "val", "test"]
CONDITION = ["left", "right", "left", "right", "left", "right"]
OPTIONS = ["--align", "go", "--window", "0", "40", "--bin-ms", "10", "--forward-ms", "20", "--split-column", "split"]


def write_session_nwb(
    path: Path, spikes: dict = SPIKES, observed_until: float | None = 2.52, trials: bool = True, subject: bool = False
) -> Path:
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.file import Subject

    nwb = NWBFile(session_description="hand-made session", identifier="sessions-test",
                  session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc), experimenter=["Doe, Jane"],
                  institution="here", experiment_description="test", keywords=["test"])  # fmt: skip
    if subject:
        nwb.subject = Subject(subject_id="s1", species="Mus musculus", sex="F", age="P90D", description="a test mouse")
    nwb.add_unit_column(name="heldout", description="held out for co-smoothing")
    for unit, times in spikes.items():
        intervals = [[0.0, observed_until]] if unit == 2 and observed_until else [[0.0, 6.0]]
        nwb.add_unit(spike_times=np.sort(times), obs_intervals=intervals, heldout=unit == 1, id=10 + unit)
    if trials:
        for name in ("go", "split", "condition"):
            nwb.add_trial_column(name=name, description=name)
        for trial in range(6):
            nwb.add_trial(
                start_time=float(trial),
                stop_time=trial + 1.0,
                go=GO[trial],
                split=SPLIT[trial],
                condition=CONDITION[trial],
            )
    times = np.arange(0, 6, 0.001)  # position = time, so a resampled value is the bin centre's time
    nwb.create_processing_module(name="behavior", description="behaviour").add(
        TimeSeries(name="position", data=np.stack([times, -times], axis=1), unit="m", rate=1000.0, starting_time=0.0)
    )
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def write_spike_csvs(folder: Path) -> tuple[Path, Path, Path]:
    spikes = folder / "spikes.csv"
    with open(spikes, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["unit", "time"])
        for unit, times in SPIKES.items():
            writer.writerows([10 + unit, repr(float(t))] for t in times)
    trials = folder / "trials.csv"
    with open(trials, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["start", "stop", "go", "split", "condition"])
        writer.writerows([float(i), i + 1.0, GO[i], SPLIT[i], CONDITION[i]] for i in range(6))
    units = folder / "units.csv"
    units.write_text("unit,heldout\n10,false\n11,true\n12,false\n13,false\n")
    return spikes, trials, units


def read(path: Path) -> dict:
    with h5py.File(path) as h5:
        return {key: h5[key][()] for key in h5} | {"attrs": dict(h5.attrs)}


def run_ok(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def run_error(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("autolfads: error: "), err
    return err


# Hand-computed bins of one trial, units in file order (held-in 10, 12, 13 then held-out 11): trial bins
# [go, go + 10 ms), ..., [go + 30, go + 40 ms); forward [go + 40, go + 50), [go + 50, go + 60).
UNIT0 = [1, 0, 1, 1, 1, 0]  # 5, 25, 35 ms; 45 ms in the first forward bin
UNIT1 = [0, 1, 0, 0, 0, 0]  # on the 10 ms edge: the second bin; 200 ms is outside
UNIT2 = [0, 1, 0, 1, 0, 0]  # 15 and 31 ms
UNIT3 = [0, 0, 0, 0, 0, 0]  # 1 ms before the window


def test_hand_placed_spikes_land_in_the_computed_bins(tmp_path, capsys):
    nwb = write_session_nwb(tmp_path / "s.nwb")
    out = run_ok(
        capsys,
        "data",
        "nwb",
        "--nwb",
        nwb,
        *OPTIONS,
        "--heldout-column",
        "heldout",
        "--condition-column",
        "condition",
        "--behavior",
        "position",
        "--out",
        tmp_path / "d.h5",
    )
    assert "train 3 / valid 2 / test 1 trials, 4+2 bins of 10 ms (0..40 ms around go), 3+1 units" in out
    assert "unobserved: NaN, marked missing; training masks them (SBTT)" in out
    f = read(tmp_path / "d.h5")
    expected = np.array([UNIT0, UNIT2, UNIT3, UNIT1], dtype=float).T  # bins x units, held-in then held-out
    train = f["train_recon_data"]
    np.testing.assert_array_equal(train[0], expected)
    np.testing.assert_array_equal(train[1], expected)
    # trial 2: unit 12 observed until 2.52 s = go + 20 ms: bins 0-1 counted, bins from 20 ms on missing
    np.testing.assert_array_equal(train[2][:, 1], [0, 1, np.nan, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(f["train_encod_data"][0], expected[:4, :3])
    valid = f["valid_recon_data"][1]  # unit 12 is never observed after 2.52 s: missing throughout
    np.testing.assert_array_equal(valid[:, [0, 2, 3]], expected[:, [0, 2, 3]])
    assert np.isnan(valid[:, 1]).all()
    assert (
        f["train_inds"].tolist() == [0, 1, 2] and f["valid_inds"].tolist() == [3, 4] and f["test_inds"].tolist() == [5]
    )
    assert f["heldin_units"].tolist() == [10, 12, 13] and f["heldout_units"].tolist() == [11]
    np.testing.assert_allclose(f["valid_window_start"], [3.5, 4.5])
    # behaviour at the bin centres: position = time (and -time)
    centres = GO[:3, None] + np.array([0.005, 0.015, 0.025, 0.035])
    np.testing.assert_allclose(f["train_behavior"], np.stack([centres, -centres], axis=-1), atol=1e-9)
    assert f["train_cond_idx"].tolist() == [0, 1, 0] and f["valid_condition"].tolist() == [1, 0]
    assert [v.decode() for v in f["condition_values"]] == ["left", "right"]
    with h5py.File(tmp_path / "d_targets.h5") as h5:
        group = h5["d"]
        np.testing.assert_array_equal(group["eval_spikes_heldout"][1, :, 0], UNIT1[:4])
        np.testing.assert_array_equal(group["eval_spikes_heldin_forward"][0, :, 0], UNIT0[4:])
        assert group["eval_trial_ids"][()].tolist() == [3, 4]


def test_spike_csvs_give_the_same_file_as_nwb(tmp_path, capsys):
    nwb = write_session_nwb(tmp_path / "s.nwb", observed_until=None)
    spikes, trials, units = write_spike_csvs(tmp_path)
    common = [*OPTIONS, "--heldout-column", "heldout", "--condition-column", "condition"]
    run_ok(capsys, "data", "nwb", "--nwb", nwb, *common, "--out", tmp_path / "from_nwb.h5")
    run_ok(
        capsys,
        "data",
        "spikes",
        "--spikes",
        spikes,
        "--trials",
        trials,
        "--units",
        units,
        *common,
        "--out",
        tmp_path / "from_csv.h5",
    )
    a, b = read(tmp_path / "from_nwb.h5"), read(tmp_path / "from_csv.h5")
    assert set(a) == set(b)
    for key in a:
        if key not in ("attrs", "condition_values"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    npz = tmp_path / "spikes.npz"
    np.savez(
        npz,
        unit=np.concatenate([np.full(len(t), 10 + u) for u, t in SPIKES.items()]),
        time=np.concatenate(list(SPIKES.values())),
    )
    run_ok(
        capsys,
        "data",
        "spikes",
        "--spikes",
        npz,
        "--trials",
        trials,
        "--units",
        units,
        *common,
        "--out",
        tmp_path / "from_npz.h5",
    )
    np.testing.assert_array_equal(read(tmp_path / "from_npz.h5")["train_recon_data"], a["train_recon_data"])


def test_seeded_fractions_are_deterministic(tmp_path, capsys):
    nwb = write_session_nwb(tmp_path / "s.nwb", observed_until=None)
    options = [
        "--align",
        "go",
        "--window",
        "0",
        "40",
        "--bin-ms",
        "10",
        "--heldout-fraction",
        "0.5",
        "--valid-fraction",
        "0.34",
    ]
    files = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        run_ok(capsys, "data", "nwb", "--nwb", nwb, *options, "--seed", seed, "--out", tmp_path / f"{name}.h5")
        files.append(read(tmp_path / f"{name}.h5"))
    a, b, _ = files
    assert len(a["heldout_units"]) == 2 and len(a["valid_inds"]) == 2 and len(a["train_inds"]) == 4
    for key in ("heldout_units", "valid_inds", "train_recon_data"):
        np.testing.assert_array_equal(a[key], b[key])


def test_session_without_trials_goes_the_continuous_way(tmp_path, capsys):
    nwb = write_session_nwb(tmp_path / "s.nwb", trials=False, observed_until=None)
    out = run_ok(
        capsys, "data", "nwb", "--nwb", nwb, "--window", "0", "40", "--bin-ms", "500", "--out", tmp_path / "rec.h5"
    )
    assert "no trials table" in out and "autolfads data chop --input" in out
    data = read(tmp_path / "rec.h5")["data"]
    assert data.shape == (12, 4)  # 6 s observed in 500 ms bins
    np.testing.assert_array_equal(data[:, 0], [0, 4] * 6)  # unit 10 fires 5-45 ms after go = 0.5 s into each second
    run_ok(
        capsys,
        "data",
        "chop",
        "--input",
        tmp_path / "rec.h5",
        "--key",
        "data",
        "--window",
        "4",
        "--out",
        tmp_path / "chops.h5",
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (
            ["--align", "move_onset"],
            "the trials table has no column 'move_onset' (--align); it has: start_time, stop_time, go, split, "
            "condition",
        ),
        (
            ["--window", "0", "600"],
            "the window 0..600 ms around go lies outside 6 trials, e.g. trial 0: 0.5000..1.1000 s but the trial runs "
            "0.0000..1.0000 s",
        ),
        (["--bin-ms", "50"], "--bin-ms 50 is wider than the 40 ms window (0..40 ms)"),
        (["--bin-ms", "15"], "--bin-ms 15 does not divide the 40 ms window (0..40 ms) into whole bins"),
        (
            ["--split-column", "condition"],
            "trials column 'condition' holds 'left'; expected train, val, valid, test, none",
        ),
        (
            ["--heldout-column", "quality"],
            "the units table has no column 'quality' (--heldout-column); it has: heldout",
        ),
        (["--behavior", "speed"], "no TimeSeries 'speed' (--behavior); the file has: behavior/position, position"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, capsys, change, message):
    nwb = write_session_nwb(tmp_path / "s.nwb")
    options = {
        "--align": ["go"],
        "--window": ["0", "40"],
        "--bin-ms": ["10"],
        "--forward-ms": ["20"],
        "--split-column": ["split"],
    }
    options[change[0]] = change[1:]
    argv = [x for option, values in options.items() for x in (option, *values)]
    err = run_error(capsys, "data", "nwb", "--nwb", nwb, *argv, "--out", tmp_path / "d.h5")
    assert message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.nwb"]


def test_units_without_spikes_and_empty_splits(tmp_path, capsys):
    nwb = write_session_nwb(tmp_path / "s.nwb", spikes={**SPIKES, 4: np.array([])})
    err = run_error(capsys, "data", "nwb", "--nwb", nwb, *OPTIONS, "--out", tmp_path / "d.h5")
    assert "1 units have no spike times (unit ids 14); every unit needs spikes" in err
    spikes, trials, _ = write_spike_csvs(tmp_path)
    trials.write_text(trials.read_text().replace(",val,", ",test,"))
    err = run_error(
        capsys, "data", "spikes", "--spikes", spikes, "--trials", trials, *OPTIONS, "--out", tmp_path / "d.h5"
    )
    assert (
        f"{trials}: no valid trials (--split-column split, 6 usable trials); LFADS needs train and valid trials" in err
    )
    err = run_error(
        capsys, "data", "spikes", "--spikes", trials, "--trials", trials, *OPTIONS, "--out", tmp_path / "d.h5"
    )
    assert "the spikes CSV has no column 'unit'; expected unit,time" in err
    assert not (tmp_path / "d.h5").exists()


def test_evaluate_reports_what_the_session_cannot_score_as_not_available(tmp_path, capsys):
    nwb = write_session_nwb(tmp_path / "s.nwb", observed_until=None)
    run_ok(
        capsys,
        "data",
        "nwb",
        "--nwb",
        nwb,
        "--align",
        "go",
        "--window",
        "0",
        "40",
        "--bin-ms",
        "10",
        "--split-column",
        "split",
        "--heldout-column",
        "heldout",
        "--out",
        tmp_path / "d.h5",
    )
    f = read(tmp_path / "d.h5")
    with h5py.File(tmp_path / "out.h5", "w") as h5:
        for split in ("train", "valid", "test"):
            h5[f"{split}_rates"] = np.full(f[f"{split}_recon_data"].shape, 0.25)
            h5[f"{split}_inds"] = f[f"{split}_inds"]
    out = run_ok(
        capsys,
        "evaluate",
        "--output",
        tmp_path / "out.h5",
        "--targets",
        tmp_path / "d_targets.h5",
        "--json",
        tmp_path / "s.json",
    )
    # co-bps by hand: valid held-out spikes [0, 1, 0, 0] per trial, the null rate is their mean 0.25 = the rates
    assert "| d | 0.0000 |" in out
    assert "vel R2: not available (no behaviour of the train and eval trials)" in out
    assert "fp-bps: not available (no forward-prediction bins of the eval trials)" in out
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["metrics"] == {"co-bps": 0.0} and set(scores["not_available"]) == {"vel R2", "fp-bps"}


@pytest.mark.skipif(
    not SHARED_NWB.is_file(),
    reason=f"the shared real MC_Maze_Small file is not here ({SHARED_NWB}; a user's clone has no ../shared: "
    "set AUTOLFADS_SHARED_DATA)",
)
def test_real_mc_maze_small_bins_as_nlb_tools_does(tmp_path, capsys):
    nlb_make = pytest.importorskip(
        "nlb_tools.make_tensors", reason="comparing with nlb_tools needs it: pip install --no-deps nlb-tools==0.0.4"
    )
    from nlb_tools.nwb_interface import NWBDataset

    out = run_ok(
        capsys,
        "data",
        "nwb",
        "--nwb",
        SHARED_NWB,
        "--align",
        "move_onset_time",
        "--window",
        "-250",
        "450",
        "--bin-ms",
        "5",
        "--valid-fraction",
        "0.2",
        "--out",
        tmp_path / "mcs.h5",
    )
    assert "train 80 / valid 20 trials, 140+0 bins of 5 ms (-250..450 ms around move_onset_time), 107+0 units" in out
    f = read(tmp_path / "mcs.h5")
    ds = NWBDataset(str(SHARED_NWB))
    ds.resample(5)
    theirs = nlb_make.make_eval_input_tensors(ds, "mc_maze_small", "test", save_file=False)["eval_spikes_heldin"]
    ours = np.empty_like(theirs)
    for split in ("train", "valid"):
        ours[f[f"{split}_inds"]] = f[f"{split}_recon_data"]
    assert ours.sum() > 10_000
    np.testing.assert_array_equal(ours, theirs)
