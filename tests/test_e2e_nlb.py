"""Neural Latents Benchmark end to end: NWB -> training file -> train -> evaluate -> submission with the real
command line on a small synthetic NWB session (slow), a search ranked by an NLB metric, and the Trainer's check
that its NLB targets match the data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import pytest

pytest.importorskip("nlb_tools", reason="NLB tests need nlb_tools: pip install --no-deps nlb-tools==0.0.4")
from nlb_tools import evaluation as nlb_evaluation  # noqa: E402

from autolfads.config import DataConfig  # noqa: E402
from autolfads.errors import ConfigError  # noqa: E402
from autolfads.evaluate import write_targets  # noqa: E402
from autolfads.train.nlb_scoring import load_nlb_targets  # noqa: E402
from autolfads.train.trainer import Trainer  # noqa: E402
from helpers import config, make_data  # noqa: E402
from nlb_data import assert_close, fake_nlb  # noqa: E402

# A small synthetic session: 4 conditions x 8 trials (6 train / 1 val / 1 test each), 20 + 6 neurons.
SMALL_SESSION = {"conditions": 4, "trials_per_condition": 8, "heldin": 20, "heldout": 6}


TINY_MODEL = [
    "model.gen_dim",
    "16",
    "model.ic_enc_dim",
    "8",
    "model.ci_enc_dim",
    "8",
    "model.con_dim",
    "8",
    "model.co_dim",
    "1",
    "model.ic_dim",
    "8",
    "model.fac_dim",
    "4",
]


TINY_TRAIN = [
    "train.batch_size",
    "16",
    "train.kl_increase_epoch",
    "1",
    "train.l2_increase_epoch",
    "1",
    "train.num_samples",
    "5",
    "train.device",
    "cpu",
]


def test_trainer_needs_matching_nlb_targets(tmp_path):
    with pytest.raises(ConfigError, match="train.nlb_every needs data.nlb_targets"):
        Trainer(config(train={"nlb_every": 1}), make_data(config().model))
    targets, _ = fake_nlb("mc_maze")  # 20 + 5 bins and 8 + 4 neurons; the tiny model has 10 + 2 bins, 4 + 2 neurons
    write_targets(tmp_path / "targets.h5", targets)
    cfg = config(train={"nlb_every": 1}).model_copy(
        update={"data": DataConfig(nlb_targets=str(tmp_path / "targets.h5"))}
    )
    with pytest.raises(
        ConfigError,
        match=r"targets.h5 \(mc_maze: 25 bins, 8\+4 neurons\) does not belong to the data in-memory "
        r"\(12 bins, 4\+2 neurons",
    ):
        Trainer(cfg, make_data(cfg.model), nlb_targets=load_nlb_targets(cfg))


# ---------------------------------------------------------------------------------------------------------------
# End to end: synthetic NWB -> data nlb -> train (with NLB metrics) -> evaluate -> submission nlb_tools accepts


@pytest.fixture(scope="module")
def nlb_files(autolfads, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("nlb")
    options = [f"--{key.replace('_', '-')}={value}" for key, value in SMALL_SESSION.items()]
    result = autolfads("data", "nlb-synthetic", "--out", folder / "session.nwb", *options)
    assert result.returncode == 0, result.stderr
    result = autolfads(
        "data",
        "nlb",
        "--dataset",
        "mc_maze",
        "--nwb",
        folder / "session.nwb",
        "--bin-ms",
        "20",
        "--out",
        folder / "mc_maze.h5",
        "--truth",
        folder / "session_truth.h5",
    )
    assert result.returncode == 0, result.stderr
    assert "train 24 / valid 4 / test 4 trials, 35+10 bins, 20+6 neurons" in result.stdout
    return {"data": folder / "mc_maze.h5", "targets": folder / "mc_maze_targets.h5"}


@pytest.mark.slow
def test_training_file_layout(nlb_files):
    with h5py.File(nlb_files["data"]) as h5:
        shapes = {key: h5[key].shape for key in h5}
        assert h5.attrs["nlb_dataset"] == "mc_maze" and h5.attrs["bin_ms"] == 20
    assert shapes["train_encod_data"] == (24, 35, 20) and shapes["train_recon_data"] == (24, 45, 26)
    assert (
        shapes["valid_recon_data"] == (4, 45, 26)
        and shapes["test_encod_data"] == (4, 35, 20)
        and "test_recon_data" not in shapes
    )
    assert (
        shapes["train_behavior"] == (24, 35, 2) and shapes["psth"] == (4, 35, 26) and shapes["valid_condition"] == (4,)
    )
    assert shapes["test_truth"] == (4, 45, 26)


@pytest.mark.slow
def test_train_evaluate_and_submit(autolfads, nlb_files, tmp_path):
    run = tmp_path / "run"
    nlb = ["train.nlb_every", "2", "data.nlb_targets", nlb_files["targets"]]
    result = autolfads(
        "train",
        "--data",
        nlb_files["data"],
        "--checkpoint",
        run,
        *TINY_MODEL,
        *TINY_TRAIN,
        "train.max_epochs",
        "4",
        *nlb,
    )
    assert result.returncode == 0, result.stderr
    assert "nlb_co_bps=" in result.stdout and "nlb_vel_r2=" in result.stdout
    resolved = (run / "config.yaml").read_text()
    assert all(
        f"{key}: {value}" in resolved
        for key, value in (("data_dim", 26), ("cs_dim", 6), ("seq_len", 45), ("fp_len", 10))
    )
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [row["nlb_psth_r2"] != "" for row in rows] == [False, True, False, True]

    result = autolfads(
        "evaluate",
        "--output",
        run / "lfads_output.h5",
        "--targets",
        nlb_files["targets"],
        "--json",
        tmp_path / "scores.json",
        "--nlb-submission",
        tmp_path / "submission.h5",
    )
    assert result.returncode == 0, result.stderr
    assert "| mc_maze_20 |" in result.stdout
    scores = json.loads((tmp_path / "scores.json").read_text())["metrics"]
    (accepted,) = nlb_evaluation.evaluate(str(nlb_files["targets"]), str(tmp_path / "submission.h5"))
    assert_close(scores, {key: float(value) for key, value in accepted["mc_maze_20_split"].items()})


@pytest.mark.slow
def test_search_ranks_members_by_an_nlb_metric(autolfads, nlb_files, tmp_path):
    workdir = tmp_path / "search"
    result = autolfads(
        "search", "--data", nlb_files["data"], "--workdir", workdir, "--population", "2",
        "--epochs-per-generation", "1", "--max-generations", "2",
        "--metric", "nlb_co_bps", *TINY_MODEL, *TINY_TRAIN, "data.nlb_targets", nlb_files["targets"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    state = list(csv.DictReader((workdir / "state.csv").open()))
    (exploit,) = list(csv.DictReader((workdir / "exploits.csv").open()))
    first = {int(row["member"]): float(row["nlb_co_bps"]) for row in state if row["generation"] == "0"}
    assert first[int(exploit["winner"])] >= first[int(exploit["loser"])]

    result = autolfads("search", "--data", nlb_files["data"], "--workdir", tmp_path / "other", "--metric", "nlb_co_bps")
    assert result.returncode == 2 and "PBT on nlb_co_bps needs data.nlb_targets" in result.stderr
