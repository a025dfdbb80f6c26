"""Population-based training decisions, as pure functions of metrics and hyperparameters.

A generation: every member trains the same number of epochs (the first one longer: the KL/L2 ramps plus
one interval), then the losers copy a winner's weights and optimizer state and perturb the winner's
hyperparameters. Who loses (SearchSettings.selection):
- truncation (the default): the bottom quarter of the ranking (and every NaN member) each copies a random
  member of the top quarter, as Jaderberg et al.'s truncation selection and Ray Tune's PBT. The members in
  between keep training undisturbed.
- tournament: disjoint random pairs, the worse of each pair loses (lfads-torch's binary tournament); half the
  population is overwritten every generation, the second best whenever it meets the best.
A NaN member always loses. The backends apply the new hyperparameters AFTER restoring the copied state.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .space import SearchSpace

STOP_WINDOW = 4  # generations whose bests the improvement ratio spans (lfads-torch's and tune-tf2's patience)
STOP_RATIO = 5e-4  # stop when the best metric improved by at most this fraction over the window
TRUNCATION_FRACTION = 0.25  # truncation selection: the bottom quarter copies the top quarter


@dataclass(frozen=True)
class Exploit:
    generation: int
    loser: int
    winner: int
    loser_metric: float
    winner_metric: float
    old: dict[str, float]  # the loser's hyperparameters before
    new: dict[str, float]  # the winner's, perturbed


def _rank_key(metric: float) -> tuple[bool, float]:
    """Sort key: NaN after everything, inf included."""
    return (True, 0.0) if math.isnan(metric) else (False, metric)


def binary_tournament(metrics: Sequence[float], rng: np.random.Generator) -> list[tuple[int, int]]:
    """Random disjoint pairs -> (loser, winner). NaN always loses; ties go to the lower index; with an odd
    population one random member sits out."""
    order = rng.permutation(len(metrics))
    pairs = []
    for a, b in zip(order[0::2], order[1::2]):
        a, b = int(a), int(b)
        a_loses = (_rank_key(metrics[a]), a) > (_rank_key(metrics[b]), b)
        pairs.append((a, b) if a_loses else (b, a))
    return pairs


def truncation_selection(metrics: Sequence[float], rng: np.random.Generator) -> list[tuple[int, int]]:
    """(loser, winner): each member of the bottom quarter (at least one) and every NaN member copies a random
    member of the top quarter (at least one; finite metrics only). Ties rank the lower index first."""
    if len(metrics) < 2:
        return []
    quarter = max(1, int(len(metrics) * TRUNCATION_FRACTION))
    order = sorted(range(len(metrics)), key=lambda m: (_rank_key(metrics[m]), m))
    top = [m for m in order[:quarter] if math.isfinite(metrics[m])]
    if not top:
        return []
    bottom = set(order[len(order) - quarter :]) | {m for m in order if math.isnan(metrics[m])}
    losers = [m for m in order if m in bottom and m not in top]
    return [(loser, top[int(rng.integers(len(top)))]) for loser in losers]


def plan_exploits(
    generation: int,
    metrics: Sequence[float],
    hparams: Sequence[Mapping[str, float]],
    space: SearchSpace,
    rng: np.random.Generator,
    selection: str = "truncation",
) -> list[Exploit]:
    """The exploit/explore decisions at the end of a generation; selection: one of names.SELECTIONS."""
    pairs = {"truncation": truncation_selection, "tournament": binary_tournament}[selection](metrics, rng)
    return [
        Exploit(
            generation,
            loser,
            winner,
            float(metrics[loser]),
            float(metrics[winner]),
            dict(hparams[loser]),
            space.perturb(hparams[winner], rng),
        )
        for loser, winner in pairs
    ]


def best_member(metrics: Sequence[float]) -> int:
    """Index of the lowest metric (NaN never wins)."""
    return min(range(len(metrics)), key=lambda i: (_rank_key(metrics[i]), i))


def ranking(metrics: Sequence[float]) -> list[int]:
    """Members best first (lowest metric; ties to the lower index), NaN members left out: best_member first."""
    return sorted((m for m in range(len(metrics)) if not math.isnan(metrics[m])), key=lambda m: (metrics[m], m))


def should_stop(best_by_generation: Sequence[float], max_generations: int | None) -> bool:
    """Stop after max_generations (None: no bound), or once the running best improved by a ratio <= STOP_RATIO over the
    last STOP_WINDOW generations: from the first of them to the last, as lfads-torch's ImprovementRatioStopper
    and tune-tf2's scheduler measure it. They take each generation's own best and divide by the window's mean
    |best|; this takes the running best (NaN generations and regressions do not count) and divides by |first|."""
    if max_generations is not None and len(best_by_generation) >= max_generations:
        return True
    if len(best_by_generation) < STOP_WINDOW:
        return False
    running = np.fmin.accumulate(np.asarray(best_by_generation, dtype=float))
    before, now = running[-STOP_WINDOW], running[-1]
    if not math.isfinite(before):
        return False
    return bool((before - now) / abs(before) <= STOP_RATIO)  # a plain bool: the record is saved as JSON too


def next_generation_s(generation_s: Sequence[float], first_epochs: int, epochs_per_generation: int) -> float:
    """The expected wall time of the next generation: the mean of the generations after the first (the burn-in),
    else the first one's time per epoch times epochs_per_generation."""
    if len(generation_s) > 1:
        return float(np.mean(generation_s[1:]))
    return generation_s[0] / first_epochs * epochs_per_generation


def over_budget(
    spent_s: float, generation_s: Sequence[float], first_epochs: int, epochs_per_generation: int, budget_s: float
) -> bool:
    """The time budget stops the search after this generation: it is spent, or the next generation (estimated
    from the ones so far) would not finish within it."""
    return spent_s + next_generation_s(generation_s, first_epochs, epochs_per_generation) > budget_s


def planned_generations(
    spent_s: float, generation_s: Sequence[float], first_epochs: int, epochs_per_generation: int, budget_s: float
) -> int:
    """How many generations a budget holds in all: those done, and as many more as the rest of the budget holds
    at the time expected of the next one."""
    next_s = next_generation_s(generation_s, first_epochs, epochs_per_generation)
    return len(generation_s) + max(0, math.floor((budget_s - spent_s) / next_s))


def generation_epochs(generation: int, epochs_per_generation: int, ramp_epochs: int) -> int:
    """The first generation is the burn-in: the KL/L2 ramps plus one interval."""
    return ramp_epochs + epochs_per_generation if generation == 0 else epochs_per_generation
