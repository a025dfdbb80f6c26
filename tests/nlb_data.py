"""Random NLB targets and submissions shared by the NLB tests (test_evaluate_scoring.py, test_cli_evaluate.py,
test_e2e_nlb.py), and the tolerance our scores must meet against nlb_tools'."""

from __future__ import annotations

import numpy as np
import pytest

from autolfads.evaluate import Targets

RTOL = 1e-6


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


def assert_close(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name] == pytest.approx(theirs[name], rel=RTOL, abs=1e-12), name
