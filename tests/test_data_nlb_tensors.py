"""`data nlb --tensors`: nlb_tools' own tensor files (made here from a synthetic NWB session with nlb_tools)
give the same training file and targets as `data nlb --nwb`; what the tensors lack is missing, never zeros."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("nlb_tools", reason="NLB tests need nlb_tools: pip install --no-deps nlb-tools==0.0.4")
from autolfads.cli import main  # noqa: E402
from autolfads.data.nlb_datasets import require_nlb_tools  # noqa: E402
from autolfads.data.nlb_synthetic import write_nlb_synthetic  # noqa: E402
from autolfads.evaluate import read_targets  # noqa: E402
from conftest import tiny_overrides  # noqa: E402

SMALL_SESSION = {"conditions": 4, "trials_per_condition": 8, "heldin": 20, "heldout": 6}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A synthetic mc_maze session at 20 ms: its NWB route, and nlb_tools' tensor files of its train/val trials."""
    folder = tmp_path_factory.mktemp("tensors")
    nwb, _ = write_nlb_synthetic(folder / "session.nwb", **SMALL_SESSION)
    make_tensors, NWBDataset = require_nlb_tools()
    ds = NWBDataset(str(nwb))
    ds.resample(20)
    paths = {name: folder / f"{name}.h5" for name in ("train_input", "eval_input", "eval_target")}
    make_tensors.make_train_input_tensors(
        ds, "mc_maze", "train", save_path=str(paths["train_input"]), include_behavior=True, include_forward_pred=True
    )
    make_tensors.make_eval_input_tensors(ds, "mc_maze", "val", save_path=str(paths["eval_input"]))
    # nlb_tools' save_to_h5 cannot store the ragged per-condition trial lists of include_psth=True
    make_tensors.make_eval_target_tensors(
        ds, "mc_maze", "train", "val", save_path=str(paths["eval_target"]), include_psth=False
    )
    assert (
        main(
            [
                "data",
                "nlb",
                "--dataset",
                "mc_maze",
                "--nwb",
                str(nwb),
                "--bin-ms",
                "20",
                "--out",
                str(folder / "from_nwb.h5"),
            ]
        )
        == 0
    )
    return {**paths, "folder": folder}


def read(path: Path) -> dict:
    with h5py.File(path) as h5:
        return {key: h5[key][()] for key in h5}


def data_nlb(files, *extra, out="t.h5", bin_ms="20"):
    return main(
        [
            "data",
            "nlb",
            "--dataset",
            "mc_maze",
            "--tensors",
            str(files["train_input"]),
            str(files["eval_input"]),
            "--bin-ms",
            bin_ms,
            "--out",
            str(files["folder"] / out),
            *map(str, extra),
        ]
    )


def test_tensors_with_eval_targets_match_the_nwb_route(files, capsys):
    assert data_nlb(files, "--eval-targets", files["eval_target"], out="full.h5") == 0
    out = capsys.readouterr().out
    assert "full.h5: mc_maze_20 from NLB tensors, train 24 / valid 4 trials, 35+10 bins, 20+6 neurons" in out
    assert "not available: psth R2" in out
    ours, nwb = read(files["folder"] / "full.h5"), read(files["folder"] / "from_nwb.h5")
    for key in ("train_encod_data", "train_recon_data", "valid_encod_data", "valid_recon_data"):
        np.testing.assert_array_equal(ours[key], nwb[key], err_msg=key)
    theirs, mine = (
        read_targets(files["folder"] / "from_nwb_targets.h5"),
        read_targets(files["folder"] / "full_targets.h5"),
    )
    assert mine.name == theirs.name == "mc_maze_20"
    for key in (
        "eval_spikes_heldout",
        "eval_spikes_heldin_forward",
        "eval_spikes_heldout_forward",
        "train_behavior",
        "eval_behavior",
    ):
        np.testing.assert_array_equal(mine.arrays[key], theirs.arrays[key], err_msg=key)
    assert mine.unavailable() == {"psth R2": "no PSTHs"}


def test_what_the_tensors_lack_is_missing_not_zero(files, capsys):
    assert data_nlb(files, out="partial.h5") == 0  # eval_input holds the val trials' held-out spikes, no forward bins
    out = capsys.readouterr().out
    assert (
        "the eval trials' forward bins are not in the tensors: NaN (missing)" in out
        and "missing bins (NaN, marked in the file): training masks them (SBTT)" in out
    )
    valid = read(files["folder"] / "partial.h5")["valid_recon_data"]
    assert np.isnan(valid[:, 35:]).all() and not np.isnan(valid[:, :35]).any()
    # the file says its NaN are missing bins: it trains with no flag, and says so
    run = ["train", "--data", files["folder"] / "partial.h5", "--checkpoint", files["folder"] / "run", "--epochs", 1]
    assert main([*map(str, run), "--quiet", "--no-report", *tiny_overrides()]) == 0
    assert "partial.h5 (" in capsys.readouterr().err.split("missing bins: ")[1]
    assert read_targets(files["folder"] / "partial_targets.h5").unavailable().keys() == {"vel R2", "psth R2", "fp-bps"}


def test_eval_trials_without_heldout_spikes_are_the_test_split(files, capsys):
    with h5py.File(files["eval_input"]) as src, h5py.File(files["folder"] / "heldin_only.h5", "w") as dst:
        dst["eval_spikes_heldin"] = src["eval_spikes_heldin"][()]  # as NLB gives its test trials
    code = main(
        [
            "data",
            "nlb",
            "--dataset",
            "mc_maze",
            "--tensors",
            str(files["train_input"]),
            str(files["folder"] / "heldin_only.h5"),
            "--bin-ms",
            "20",
            "--out",
            str(files["folder"] / "test.h5"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "train 19 / valid 5 / test 4 trials" in out and "no targets file" in out
    f = read(files["folder"] / "test.h5")
    assert f["test_inds"].tolist() == [24, 25, 26, 27] and "test_recon_data" not in f
    assert sorted(f["train_inds"].tolist() + f["valid_inds"].tolist()) == list(range(24))
    assert not (files["folder"] / "test_targets.h5").exists()


@pytest.mark.parametrize(
    "extra, bin_ms, message",
    [
        ([], "5", "'train_spikes_heldin' has 35 bins: 20 ms bins for mc_maze's 700 ms trial window, but --bin-ms is 5"),
        (["--eval-targets", "EVAL"], "10", "the targets are 'mc_maze_20' but --bin-ms gives 'mc_maze_10'"),
    ],
)
def test_bin_width_is_read_from_the_data_and_checked(files, capsys, extra, bin_ms, message):
    extra = [files["eval_target"] if x == "EVAL" else x for x in extra]
    assert data_nlb(files, *extra, out="bad.h5", bin_ms=bin_ms) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert not (files["folder"] / "bad.h5").exists()


def test_a_file_that_is_not_nlb_tensors(files, capsys):
    code = main(
        [
            "data",
            "nlb",
            "--dataset",
            "mc_maze",
            "--tensors",
            str(files["folder"] / "from_nwb.h5"),
            "--bin-ms",
            "20",
            "--out",
            str(files["folder"] / "bad.h5"),
        ]
    )
    assert code == 2
    assert "no 'train_spikes_heldin'; NLB tensor files have train_spikes_heldin/heldout" in capsys.readouterr().err
    assert not (files["folder"] / "bad.h5").exists()
