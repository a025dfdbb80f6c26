"""NLB's scoring rules: which metric applies to which data set, and how model rates become a submission.

A submission maps NLB's six keys (train_rates_heldin ... eval_rates_heldout_forward) to expected counts per
bin. `submission_from_rates` builds one from rates of whole trials (trial + forward bins, held-in +
held-out neurons, as an LFADS output holds them) matched by NLB trial id; `score` computes the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..data.nlb_targets import Targets
from ..errors import EvaluationError
from ..names import NLB_METRIC_NAMES
from . import metrics

SUBMISSION_KEYS = (
    "train_rates_heldin",
    "train_rates_heldout",
    "eval_rates_heldin",
    "eval_rates_heldout",
    "eval_rates_heldin_forward",
    "eval_rates_heldout_forward",
)


def submission_from_rates(
    rates: Mapping[str, tuple[np.ndarray, np.ndarray]],
    targets: Targets,
    train_ids: np.ndarray | None = None,
    eval_ids: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """rates: {source: (NLB trial ids (n,), rates (n, trial + forward bins, held-in + held-out neurons))},
    e.g. one entry per split of an LFADS output. The train and eval trials (default: the targets') are
    looked up by id; `targets` also gives the bins and neurons."""
    ids = np.concatenate([np.asarray(trial_ids) for trial_ids, _ in rates.values()])
    stacked = np.concatenate([np.asarray(values) for _, values in rates.values()])
    expected = (targets.trial_bins + targets.forward_bins, targets.heldin + targets.heldout)
    if stacked.shape[1:] != expected:
        raise EvaluationError(
            f"the rates are {stacked.shape[1]} bins x {stacked.shape[2]} neurons per trial but {targets.name} needs "
            f"{targets.trial_bins}+{targets.forward_bins} bins x {targets.heldin}+{targets.heldout} neurons: were they "
            "made from another data file?"
        )
    row = {int(trial): i for i, trial in enumerate(ids)}
    t, n = targets.trial_bins, targets.heldin

    def pick(wanted: np.ndarray, role: str) -> np.ndarray:
        missing = [int(trial) for trial in wanted if int(trial) not in row]
        if missing:
            raise EvaluationError(
                f"the rates have no trial {missing[0]} ({len(missing)} of the {len(wanted)} {role} trials are missing)"
            )
        return stacked[[row[int(trial)] for trial in wanted]].astype(np.float64)

    train = pick(targets.train_ids if train_ids is None else train_ids, "train")
    evaluated = pick(targets.eval_ids if eval_ids is None else eval_ids, "eval")
    return {
        "train_rates_heldin": train[:, :t, :n],
        "train_rates_heldout": train[:, :t, n:],
        "eval_rates_heldin": evaluated[:, :t, :n],
        "eval_rates_heldout": evaluated[:, :t, n:],
        "eval_rates_heldin_forward": evaluated[:, t:, :n],
        "eval_rates_heldout_forward": evaluated[:, t:, n:],
    }


def check_rates(values: np.ndarray, key: str, source: str = "submission") -> None:
    """Rates must be finite and non-negative: name the first bad entry."""
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), values.shape))
        raise EvaluationError(
            f"{source}: {key!r} holds {int(bad.sum())} NaN, infinite or negative rates (expected counts per bin must "
            "be >= 0), "
            f"e.g. {key}[{', '.join(map(str, index))}] = {float(values[index])!r}"
        )


def score(targets: Targets, submission: Mapping[str, np.ndarray]) -> dict[str, float]:
    """NLB's metrics for one data set, keyed by NLB's names ("co-bps", "vel R2" or "tp corr", "psth R2", "fp-bps");
    those the targets cannot score (Targets.unavailable) are left out."""
    for key in SUBMISSION_KEYS:
        if key not in submission:
            raise EvaluationError(f"submission: {key!r} is missing")
        check_rates(np.asarray(submission[key]), key)
    # in float64, as nlb_tools computes: float32 means and sums would differ in the 7th digit
    submission = {key: np.asarray(submission[key], dtype=np.float64) for key in SUBMISSION_KEYS}
    a = {key: value.astype(np.float64) if value.dtype.kind == "f" else value for key, value in targets.arrays.items()}
    eval_rates = np.concatenate([submission["eval_rates_heldin"], submission["eval_rates_heldout"]], axis=-1)
    unavailable = targets.unavailable()
    result = {}
    if "co-bps" not in unavailable:
        result["co-bps"] = metrics.bits_per_spike(submission["eval_rates_heldout"], a["eval_spikes_heldout"])
    if targets.dataset == "dmfc_rsg":
        result["tp corr"] = metrics.speed_tp_correlation(a["eval_spikes_heldout"], eval_rates, a["eval_behavior"])
    elif "vel R2" not in unavailable:
        train_rates = np.concatenate([submission["train_rates_heldin"], submission["train_rates_heldout"]], axis=-1)
        result["vel R2"] = metrics.velocity_r2(
            train_rates,
            a["train_behavior"],
            eval_rates,
            a["eval_behavior"],
            a.get("train_decode_mask"),
            a.get("eval_decode_mask"),
        )
    if "psth" in a:
        result["psth R2"] = metrics.psth_r2(a["psth"], eval_rates, a["eval_cond_idx"], a.get("eval_jitter"))
    if "fp-bps" not in unavailable:
        forward_rates = np.concatenate(
            [submission["eval_rates_heldin_forward"], submission["eval_rates_heldout_forward"]], axis=-1
        )
        forward_spikes = np.concatenate([a["eval_spikes_heldin_forward"], a["eval_spikes_heldout_forward"]], axis=-1)
        result["fp-bps"] = metrics.bits_per_spike(forward_rates, forward_spikes)
    return result


def format_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """A Markdown table: one row per model, one column per metric (NLB's names, NLB's order)."""
    columns = [name for name in NLB_METRIC_NAMES if any(name in row for row in rows.values())]
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for model, row in rows.items():
        lines.append(f"| {model} | " + " | ".join(f"{row[c]:.4f}" if c in row else "n/a" for c in columns) + " |")
    return "\n".join(lines)
