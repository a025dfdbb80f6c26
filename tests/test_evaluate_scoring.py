"""evaluate/scoring.py and evaluate/metrics.py: our NumPy NLB metrics against nlb_tools. The same random
targets and rates (NaN-masked bins included) go to our `score` and to nlb_tools' `evaluate`; bad rates are
named."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nlb_tools", reason="NLB tests need nlb_tools: pip install --no-deps nlb-tools==0.0.4")
from nlb_tools import evaluation as nlb_evaluation  # noqa: E402

from autolfads.errors import EvaluationError  # noqa: E402
from autolfads.evaluate import Targets, metrics, score  # noqa: E402
from nlb_data import RTOL, assert_close, fake_nlb  # noqa: E402


def nlb_tools_scores(targets: Targets, submission: dict) -> dict[str, float]:
    """nlb_tools.evaluate on the same arrays, its result renamed back to NLB's metric names."""
    copies = {key: value.copy() for key, value in submission.items()}  # nlb_tools writes into the rates it scores
    (result,) = nlb_evaluation.evaluate({targets.name: dict(targets.arrays)}, {targets.name: copies})
    (values,) = result.values()
    return {key.split("] ")[-1]: float(value) for key, value in values.items()}  # "[100] co-bps" for the scaling sets


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
