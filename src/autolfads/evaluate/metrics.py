"""The Neural Latents Benchmark's metrics in plain NumPy: the same numbers as nlb_tools 0.0.4's evaluation.

These are the definitions of bits per spike and R^2; train/metrics.py has their torch twins for the training
loop (on populations of tensors, batch by batch), and a test checks the two agree.

Arrays are trials x time x neurons (or x behaviour channels). Rates are expected counts per bin. Bins whose
spike count is NaN (outside the evaluated part of a trial) are left out, as nlb_tools does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import EvaluationError

RIDGE_ALPHAS = np.logspace(-4, 0, 9)  # nlb_tools' GridSearchCV grid
CV_FOLDS = 5  # scikit-learn's default: contiguous folds, no shuffling
ZERO_RATE = 1e-9  # a predicted rate of exactly 0 counts as this


def poisson_nll(rates: np.ndarray, spikes: np.ndarray) -> float:
    """Sum of r - n log r over the bins with a spike count. log n! is left out: it cancels in bits per spike."""
    keep = ~np.isnan(spikes)
    r, n = rates[keep], spikes[keep]
    r = np.where(r == 0, ZERO_RATE, r)
    return float(np.sum(r - n * np.log(r)))


def bits_per_spike(rates: np.ndarray, spikes: np.ndarray) -> float:
    """Log-likelihood gain over predicting each neuron's mean count (over all trials and bins), in bits/spike.
    The definition of every bits per spike autolfads reports (val_bps and co. are its torch twin)."""
    null = np.nanmean(spikes, axis=tuple(range(spikes.ndim - 1)), keepdims=True)
    null = np.broadcast_to(null, spikes.shape)
    return (poisson_nll(null, spikes) - poisson_nll(rates, spikes)) / float(np.nansum(spikes)) / np.log(2)


def r2_score(truth: np.ndarray, pred: np.ndarray) -> float:
    """R^2 of each column (the last axis: neurons, behaviour channels) over all other axes (trials x bins),
    averaged over columns; scikit-learn's r2_score on 2-D arrays: a constant column scores 1 if predicted
    exactly, else 0. The definition of every R^2 autolfads reports (val_r2 is its torch twin)."""
    truth, pred = truth.reshape(-1, truth.shape[-1]), pred.reshape(-1, pred.shape[-1])
    ss_res = np.sum((truth - pred) ** 2, axis=0)
    ss_tot = np.sum((truth - truth.mean(axis=0)) ** 2, axis=0)
    scores = np.ones(truth.shape[1])
    valid = (ss_res != 0) & (ss_tot != 0)
    scores[valid] = 1 - ss_res[valid] / ss_tot[valid]
    scores[(ss_res != 0) & (ss_tot == 0)] = 0.0
    return float(scores.mean())


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression with an unpenalised intercept -> (weights (features x outputs), intercept)."""
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc = x - x_mean
    gram = xc.T @ xc
    gram.flat[:: gram.shape[0] + 1] += alpha
    weights = np.linalg.solve(gram, xc.T @ (y - y_mean))
    return weights, y_mean - x_mean @ weights


def ridge_r2(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray) -> float:
    """R^2 on eval data of a ridge decoder whose alpha is chosen by 5-fold cross-validation on the training
    data (first best mean fold R^2), then refitted on all of it."""
    folds = _kfold(x_train.shape[0], CV_FOLDS)
    mean_scores = []
    for alpha in RIDGE_ALPHAS:
        scores = []
        for fold in folds:
            fit = np.ones(x_train.shape[0], dtype=bool)
            fit[fold] = False
            weights, intercept = ridge_fit(x_train[fit], y_train[fit], alpha)
            scores.append(r2_score(y_train[fold], x_train[fold] @ weights + intercept))
        mean_scores.append(np.mean(scores))
    weights, intercept = ridge_fit(x_train, y_train, RIDGE_ALPHAS[int(np.argmax(mean_scores))])
    return r2_score(y_eval, x_eval @ weights + intercept)


def velocity_r2(
    train_rates: np.ndarray,
    train_behavior: np.ndarray,
    eval_rates: np.ndarray,
    eval_behavior: np.ndarray,
    train_masks: np.ndarray | None = None,
    eval_masks: np.ndarray | None = None,
) -> float:
    """Decoding R^2 of behaviour from rates, every bin a sample; one decoder per column of the trial masks
    (trials x decoders, e.g. area2_bump's active/passive trials), R^2 averaged over decoders. Bins whose
    behaviour is NaN are skipped."""
    train_masks = (
        np.ones((train_rates.shape[0], 1), dtype=bool) if train_masks is None else np.asarray(train_masks, dtype=bool)
    )
    eval_masks = (
        np.ones((eval_rates.shape[0], 1), dtype=bool) if eval_masks is None else np.asarray(eval_masks, dtype=bool)
    )
    scores = []
    for column in range(train_masks.shape[1]):
        x_train, y_train = _flat(train_rates[train_masks[:, column]]), _flat(train_behavior[train_masks[:, column]])
        x_eval, y_eval = _flat(eval_rates[eval_masks[:, column]]), _flat(eval_behavior[eval_masks[:, column]])
        train_keep, eval_keep = ~np.isnan(y_train[:, 0]), ~np.isnan(y_eval[:, 0])
        scores.append(ridge_r2(x_train[train_keep], y_train[train_keep], x_eval[eval_keep], y_eval[eval_keep]))
    return float(np.mean(scores))


def psth_r2(
    psth: np.ndarray, eval_rates: np.ndarray, cond_idx: Sequence[np.ndarray], jitter: np.ndarray | None = None
) -> float:
    """R^2 of condition-averaged rates to the true PSTHs (conditions x time x neurons), over the bins where
    the PSTH is defined, averaged over neurons. cond_idx[c]: eval trials of condition c. jitter: bins each
    trial is shifted by (dmfc_rsg)."""
    jitter = np.zeros(eval_rates.shape[0], dtype=int) if jitter is None else np.asarray(jitter, dtype=int)
    truth, pred = [], []
    for condition, trials in enumerate(cond_idx):
        trials = np.asarray(trials, dtype=int)
        if trials.size == 0:
            continue
        average = np.mean([_shift(eval_rates[t], jitter[t]) for t in trials], axis=0)
        defined = ~np.isnan(psth[condition, :, 0])
        if np.isnan(average[defined]).any():
            raise EvaluationError(f"condition {condition}: jittered rates do not cover the bins of its PSTH")
        truth.append(psth[condition][defined])
        pred.append(average[defined])
    return r2_score(np.vstack(truth), np.vstack(pred))


def speed_tp_correlation(eval_spikes_heldout: np.ndarray, eval_rates: np.ndarray, eval_behavior: np.ndarray) -> float:
    """dmfc_rsg: Pearson r between each trial's neural speed (mean norm of the rate change per bin over its
    set-go bins, those with spike counts) and its produced interval tp, per condition (prior, modality,
    direction: behaviour columns 0-2), averaged over conditions."""
    defined = ~np.isnan(eval_spikes_heldout[..., 0])
    speeds = np.array(
        [np.mean(np.linalg.norm(np.diff(trial[keep], axis=0), axis=1)) for trial, keep in zip(eval_rates, defined)]
    )
    conditions = np.unique(eval_behavior[:, :3], axis=0)
    conditions = conditions[~np.all(np.isnan(conditions), axis=1)]
    correlations = []
    for condition in conditions:
        members = np.all(eval_behavior[:, :3] == condition, axis=1)
        correlations.append(_pearson(speeds[members], eval_behavior[members, -1]))
    return float(np.mean(correlations))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    return float(np.clip(xc @ yc / np.sqrt((xc @ xc) * (yc @ yc)), -1.0, 1.0))


def _kfold(n: int, k: int) -> list[np.ndarray]:
    """scikit-learn's KFold without shuffling: contiguous folds, the first n % k one sample larger."""
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    ends = np.cumsum(sizes)
    return [np.arange(end - size, end) for size, end in zip(sizes, ends)]


def _flat(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1, array.shape[-1]) if array.ndim > 2 else array


def _shift(trial: np.ndarray, bins: int) -> np.ndarray:
    """A trial (time x neurons) delayed by `bins` (advanced if negative), padded with NaN."""
    if bins == 0:
        return trial
    pad = np.full((abs(bins), trial.shape[1]), np.nan)
    return np.vstack([pad, trial[:-bins]]) if bins > 0 else np.vstack([trial[-bins:], pad])
