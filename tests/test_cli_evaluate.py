"""`autolfads evaluate`: the table, JSON and a submission nlb_tools accepts (test phase included), and
rates that are bad or of other data refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("nlb_tools", reason="NLB tests need nlb_tools: pip install --no-deps nlb-tools==0.0.4")
from nlb_tools import evaluation as nlb_evaluation  # noqa: E402

from autolfads.cli import main  # noqa: E402
from autolfads.data.hdf5 import write_lfads_h5  # noqa: E402
from autolfads.evaluate import Targets, write_targets  # noqa: E402
from nlb_data import assert_close, fake_nlb  # noqa: E402

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
