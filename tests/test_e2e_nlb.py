"""Neural Latents Benchmark: our NumPy metrics against nlb_tools, bad input, and NWB -> train -> evaluate -> submission.

The metric tests feed the same random targets and rates (NaN-masked bins included) to our `score` and to
nlb_tools' `evaluate`. The end-to-end tests (slow) run the real command line on a small synthetic NWB session.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("nlb_tools", reason="NLB tests need nlb_tools: pip install --no-deps nlb-tools==0.0.4")
from nlb_tools import evaluation as nlb_evaluation  # noqa: E402

from autolfads.cli import main  # noqa: E402
from autolfads.config import DataConfig  # noqa: E402
from autolfads.data.hdf5 import write_lfads_h5  # noqa: E402
from autolfads.data.nlb_synthetic import write_nlb_synthetic  # noqa: E402
from autolfads.errors import ConfigError, EvaluationError  # noqa: E402
from autolfads.evaluate import Targets, metrics, score, write_targets  # noqa: E402
from autolfads.train.nlb_scoring import load_nlb_targets  # noqa: E402
from autolfads.train.trainer import Trainer  # noqa: E402
from helpers import config, make_data  # noqa: E402

RTOL = 1e-6
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


# ---------------------------------------------------------------------------------------------------------------
# Random NLB targets and submissions, as nlb_tools' make_eval_target_tensors would make them


def fake_nlb(dataset: str, seed: int = 0) -> tuple[Targets, dict[str, np.ndarray]]:
    """Targets and a submission for `dataset`: 40 train / 12 eval trials, 20 + 5 bins, 8 + 4 neurons, 3 conditions."""
    rng = np.random.default_rng(seed)
    n_train, n_eval, bins, forward, heldin, heldout = 40, 12, 20, 5, 8, 4
    latent = rng.normal(size=(n_train + n_eval, bins + forward, 3))
    true_rates = np.exp(latent @ rng.normal(0, 0.5, size=(3, heldin + heldout)) - 1.0)
    spikes = rng.poisson(true_rates).astype(float)
    rates = np.clip(true_rates * rng.gamma(20, 1 / 20, size=true_rates.shape), 0, None)
    rates[0, 0, :3] = 0.0  # exact zeros count as 1e-9
    train, evaluated = slice(0, n_train), slice(n_train, None)
    arrays = {
        "eval_spikes_heldout": spikes[evaluated, :bins, heldin:].copy(),
        "eval_spikes_heldin_forward": spikes[evaluated, bins:, :heldin],
        "eval_spikes_heldout_forward": spikes[evaluated, bins:, heldin:],
    }
    arrays["eval_spikes_heldout"][:, :2] = np.nan  # bins outside the evaluated window
    behaviour = latent[..., :2] * 10 + rng.normal(size=latent[..., :2].shape)
    arrays["train_behavior"], arrays["eval_behavior"] = behaviour[train, :bins], behaviour[evaluated, :bins].copy()
    arrays["eval_behavior"][0, :3] = np.nan  # behaviour missing at the start of one trial
    conditions = np.arange(n_train + n_eval) % 3
    cond_idx = np.empty(3, dtype=object)
    for c in range(3):
        cond_idx[c] = np.flatnonzero(conditions[evaluated] == c)
    psth = np.stack([true_rates[conditions == c, :bins].mean(0) for c in range(3)])
    psth[1, -3:] = np.nan  # a shorter condition
    arrays.update(psth=psth, eval_cond_idx=cond_idx)
    if dataset == "area2_bump":  # separate decoders for two kinds of trial
        arrays["train_decode_mask"] = np.stack([conditions[train] == 0, conditions[train] != 0], axis=1)
        arrays["eval_decode_mask"] = np.stack([conditions[evaluated] == 0, conditions[evaluated] != 0], axis=1)
    if dataset == "dmfc_rsg":  # behaviour per trial: is_eye, theta, is_short, ts, tp; jittered trials
        trial_behaviour = np.stack(
            [
                conditions % 2,
                np.zeros_like(conditions),
                conditions // 2,
                np.full(conditions.shape, 0.8),
                rng.uniform(0.6, 1.0, conditions.size),
            ],
            axis=1,
        ).astype(float)
        arrays["train_behavior"], arrays["eval_behavior"] = trial_behaviour[train], trial_behaviour[evaluated]
        arrays["eval_spikes_heldout"][1::2, :5] = np.nan  # set-go periods of different lengths
        arrays["eval_jitter"] = rng.integers(0, 3, size=n_eval)  # trials delayed by up to 2 bins,
        arrays["psth"][:, :2] = np.nan  # so PSTHs start 2 bins late
    submission = {
        "train_rates_heldin": rates[train, :bins, :heldin],
        "train_rates_heldout": rates[train, :bins, heldin:],
        "eval_rates_heldin": rates[evaluated, :bins, :heldin],
        "eval_rates_heldout": rates[evaluated, :bins, heldin:],
        "eval_rates_heldin_forward": rates[evaluated, bins:, :heldin],
        "eval_rates_heldout_forward": rates[evaluated, bins:, heldin:],
    }
    ids = np.arange(n_train + n_eval) + 100
    return Targets(dataset, dataset, 5, arrays, ids[train], ids[evaluated]), submission


def nlb_tools_scores(targets: Targets, submission: dict) -> dict[str, float]:
    """nlb_tools.evaluate on the same arrays, its result renamed back to NLB's metric names."""
    copies = {key: value.copy() for key, value in submission.items()}  # nlb_tools writes into the rates it scores
    (result,) = nlb_evaluation.evaluate({targets.name: dict(targets.arrays)}, {targets.name: copies})
    (values,) = result.values()
    return {key.split("] ")[-1]: float(value) for key, value in values.items()}  # "[100] co-bps" for the scaling sets


def assert_close(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name] == pytest.approx(theirs[name], rel=RTOL, abs=1e-12), name


# ---------------------------------------------------------------------------------------------------------------
# Metrics: the same numbers as nlb_tools


@pytest.mark.parametrize("dataset", ["mc_maze", "mc_maze_small", "mc_rtt", "area2_bump", "dmfc_rsg"])
def test_score_matches_nlb_tools_evaluate(dataset):
    targets, submission = fake_nlb(dataset)
    if dataset == "mc_rtt":  # no PSTHs for mc_rtt
        for key in ("psth", "eval_cond_idx"):
            del targets.arrays[key]
    ours = score(targets, submission)
    assert_close(ours, nlb_tools_scores(targets, submission))
    assert ("tp corr" in ours) == (dataset == "dmfc_rsg") and ("vel R2" in ours) != (dataset == "dmfc_rsg")


def test_bits_per_spike_masks_nan_bins_and_floors_zero_rates():
    targets, submission = fake_nlb("mc_maze", seed=1)
    spikes, rates = targets.arrays["eval_spikes_heldout"], submission["eval_rates_heldout"].copy()
    rates[np.isnan(spikes)] = np.nan  # rates in masked bins are never read
    rates[3, 4, 1] = 0.0
    expected = nlb_evaluation.bits_per_spike(rates.copy(), spikes)
    assert metrics.bits_per_spike(rates, spikes) == pytest.approx(expected, rel=RTOL)
    assert rates[3, 4, 1] == 0.0  # inputs are not modified


def test_velocity_decoding_matches_grid_searched_ridge():
    targets, submission = fake_nlb("area2_bump", seed=2)
    a = targets.arrays
    train = np.concatenate([submission["train_rates_heldin"], submission["train_rates_heldout"]], axis=-1)
    evaluated = np.concatenate([submission["eval_rates_heldin"], submission["eval_rates_heldout"]], axis=-1)
    expected = nlb_evaluation.velocity_decoding(
        train, a["train_behavior"], a["train_decode_mask"], evaluated, a["eval_behavior"], a["eval_decode_mask"]
    )
    ours = metrics.velocity_r2(
        train, a["train_behavior"], evaluated, a["eval_behavior"], a["train_decode_mask"], a["eval_decode_mask"]
    )
    assert ours == pytest.approx(expected, rel=RTOL)


def test_psth_r2_with_jitter_empty_conditions_and_nan_bins():
    targets, submission = fake_nlb("dmfc_rsg", seed=3)
    a = targets.arrays
    evaluated = np.concatenate([submission["eval_rates_heldin"], submission["eval_rates_heldout"]], axis=-1)
    cond_idx = a["eval_cond_idx"].copy()
    cond_idx[2] = np.array([], dtype=int)
    expected = nlb_evaluation.eval_psth(a["psth"], evaluated, cond_idx, a["eval_jitter"])
    assert metrics.psth_r2(a["psth"], evaluated, cond_idx, a["eval_jitter"]) == pytest.approx(expected, rel=RTOL)


def test_kfold_is_scikit_learns():
    from sklearn.model_selection import KFold

    for n in (10, 13, 52):
        theirs = [test for _, test in KFold(5).split(np.zeros(n))]
        assert all(np.array_equal(a, b) for a, b in zip(metrics._kfold(n, 5), theirs, strict=True))


@pytest.mark.parametrize("bad, kind", [(np.nan, "NaN"), (-0.5, "negative"), (np.inf, "infinite")])
def test_bad_rates_are_named(bad, kind):
    targets, submission = fake_nlb("mc_maze")
    submission["eval_rates_heldout"][2, 3, 1] = bad
    with pytest.raises(
        EvaluationError,
        match=rf"'eval_rates_heldout' holds 1 NaN, infinite or negative rates .*eval_rates_heldout\[2, 3, 1\] = {bad}",
    ):
        score(targets, submission)


# ---------------------------------------------------------------------------------------------------------------
# The evaluate command on files (targets written as `data nlb` writes them, an LFADS-style output)


def write_output(path: Path, targets: Targets, submission: dict) -> Path:
    """An LFADS output holding the submission's rates: train trials as `train`, eval trials as `valid`."""
    train = np.concatenate([submission["train_rates_heldin"], submission["train_rates_heldout"]], axis=-1)
    train = np.concatenate([train, np.ones((train.shape[0], targets.forward_bins, train.shape[2]))], axis=1)
    evaluated = np.concatenate(
        [
            np.concatenate([submission["eval_rates_heldin"], submission["eval_rates_heldout"]], axis=-1),
            np.concatenate(
                [submission["eval_rates_heldin_forward"], submission["eval_rates_heldout_forward"]], axis=-1
            ),
        ],
        axis=1,
    )
    order = np.arange(len(targets.eval_ids))[::-1]  # trials out of order: matched by id
    arrays = {
        "train_rates": train,
        "train_inds": targets.train_ids,
        "valid_rates": evaluated[order],
        "valid_inds": targets.eval_ids[order],
    }
    return write_lfads_h5(
        path, {key: value.astype(np.float32) if key.endswith("rates") else value for key, value in arrays.items()}
    )


def test_evaluate_command_writes_table_json_and_a_submission_nlb_tools_accepts(tmp_path, capsys):
    targets, submission = fake_nlb("mc_maze")
    write_targets(tmp_path / "targets.h5", targets)
    write_output(tmp_path / "out.h5", targets, submission)
    code = main(
        [
            "evaluate",
            "--output",
            str(tmp_path / "out.h5"),
            "--targets",
            str(tmp_path / "targets.h5"),
            "--json",
            str(tmp_path / "s.json"),
            "--nlb-submission",
            str(tmp_path / "sub.h5"),
        ]
    )
    stdout = capsys.readouterr().out
    assert code == 0 and "| co-bps | vel R2 | psth R2 | fp-bps |" in stdout
    scores = json.loads((tmp_path / "s.json").read_text())["metrics"]
    (result,) = nlb_evaluation.evaluate(str(tmp_path / "targets.h5"), str(tmp_path / "sub.h5"))
    assert_close(scores, {key: float(value) for key, value in result["mc_maze_split"].items()})

    # A second data set goes into the same submission file beside the first.
    other, other_submission = fake_nlb("mc_maze_small", seed=5)
    write_targets(tmp_path / "small_targets.h5", other)
    write_output(tmp_path / "small_out.h5", other, other_submission)
    assert (
        main(
            [
                "evaluate",
                "--output",
                str(tmp_path / "small_out.h5"),
                "--targets",
                str(tmp_path / "small_targets.h5"),
                "--nlb-submission",
                str(tmp_path / "sub.h5"),
            ]
        )
        == 0
    )
    with h5py.File(tmp_path / "sub.h5") as h5:
        assert sorted(h5) == ["mc_maze", "mc_maze_small"] and len(h5["mc_maze"]) == 6


def test_test_phase_submission_holds_the_test_trials(tmp_path, capsys):
    targets, submission = fake_nlb("mc_maze")
    write_targets(tmp_path / "targets.h5", targets)
    write_output(tmp_path / "out.h5", targets, submission)
    args = [
        "evaluate",
        "--output",
        str(tmp_path / "out.h5"),
        "--targets",
        str(tmp_path / "targets.h5"),
        "--phase",
        "test",
        "--nlb-submission",
        str(tmp_path / "sub.h5"),
    ]
    assert main(args) == 2 and "no test_rates" in capsys.readouterr().err
    with h5py.File(
        tmp_path / "out.h5", "a"
    ) as h5:  # NLB test trials 7, 3, 5: held-in neurons only in the data, rates for all
        h5["test_rates"], h5["test_inds"] = np.full((3, 25, 12), 0.5, dtype=np.float32), np.array([7, 3, 5])
    assert main(args) == 0
    with h5py.File(tmp_path / "sub.h5") as h5:
        shapes = {key: h5["mc_maze"][key].shape for key in h5["mc_maze"]}
    assert shapes["eval_rates_heldin"] == (3, 20, 8) and shapes["eval_rates_heldout_forward"] == (3, 5, 4)
    assert shapes["train_rates_heldout"] == (52, 20, 4)  # NLB's train and val trials


@pytest.mark.parametrize("bad", [np.nan, -1.0])
def test_evaluate_command_refuses_bad_rates_in_one_line(tmp_path, capsys, bad):
    targets, submission = fake_nlb("mc_maze")
    submission["eval_rates_heldin"][1, 2, 3] = bad
    write_targets(tmp_path / "targets.h5", targets)
    write_output(tmp_path / "out.h5", targets, submission)
    assert main(["evaluate", "--output", str(tmp_path / "out.h5"), "--targets", str(tmp_path / "targets.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        "\n" not in err
        and err.startswith("autolfads: error: ")
        and "out.h5" in err
        and "'valid_rates'" in err
        and f"= {bad}" in err
    )


def test_evaluate_command_refuses_rates_of_other_data(tmp_path, capsys):
    targets, submission = fake_nlb("mc_maze")
    write_targets(tmp_path / "targets.h5", targets)
    write_output(
        tmp_path / "out.h5", targets, {key: value[..., :-1] for key, value in submission.items()}
    )  # a neuron short
    assert main(["evaluate", "--output", str(tmp_path / "out.h5"), "--targets", str(tmp_path / "targets.h5")]) == 2
    assert "25 bins x 10 neurons per trial but mc_maze needs 20+5 bins x 8+4 neurons" in capsys.readouterr().err


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
