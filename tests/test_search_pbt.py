"""search/pbt.py: the pure population decisions. Truncation selection, binary tournament, exploit planning,
best member and ranking, the stopping rule, generation lengths and the time-budget rule.

Expectations follow /work/shared/reference/autolfads-pbt-spec.md; every random test uses a fixed seed."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import numpy as np
import pytest

from autolfads.search.pbt import (
    STOP_RATIO,
    STOP_WINDOW,
    TRUNCATION_FRACTION,
    Exploit,
    best_member,
    binary_tournament,
    generation_epochs,
    next_generation_s,
    over_budget,
    plan_exploits,
    planned_generations,
    ranking,
    should_stop,
    truncation_selection,
)
from autolfads.search.space import (
    HyperParameter,
    SearchSpace,
)

NAN = float("nan")


INF = float("inf")


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------------
# SearchSpace
# --------------------------------------------------------------------------------------------------


def small_space() -> SearchSpace:
    return SearchSpace(
        params={
            "lr_init": HyperParameter(low=1e-5, high=5e-3, log=True, initial=0.004),
            "dropout_rate": HyperParameter(low=0.0, high=0.6),
        }
    )


# --------------------------------------------------------------------------------------------------
# truncation_selection
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, quarter", [(2, 1), (3, 1), (4, 1), (7, 1), (8, 2), (16, 4), (40, 10)])
def test_truncation_bottom_quarter_copies_top_quarter(n, quarter):
    assert max(1, int(n * TRUNCATION_FRACTION)) == quarter
    g = rng(21)
    metrics = list(g.permutation(n).astype(float))  # member m ranks metrics[m]-th: 0 is the best
    top = {m for m in range(n) if metrics[m] < quarter}
    bottom = {m for m in range(n) if metrics[m] >= n - quarter}
    winners = Counter()
    for _ in range(200):
        pairs = truncation_selection(metrics, g)
        assert sorted(loser for loser, _ in pairs) == sorted(bottom)  # each of the bottom quarter, once
        assert all(winner in top for _, winner in pairs)
        assert all(isinstance(i, int) for pair in pairs for i in pair)
        winners.update(winner for _, winner in pairs)
    assert set(winners) == top  # every top member is drawn as a winner
    assert all(140 < c < 260 for c in winners.values()), winners  # uniform over the top: 200 each expected


def test_truncation_keeps_the_middle_and_the_second_best():
    """8 members: only the two worst lose, and the best two (who a tournament may pair) never do."""
    metrics = [0.0945, 0.0941, 0.0950, 0.0948, 0.0952, 0.0946, 0.0944, 0.0943]
    for seed in range(50):
        pairs = truncation_selection(metrics, rng(seed))
        assert sorted(loser for loser, _ in pairs) == [2, 4]
        assert {winner for _, winner in pairs} <= {1, 7}


def test_truncation_nan_members_always_lose_to_finite_ones():
    metrics = [NAN, 3.0, NAN, 1.0, NAN, 2.0, 4.0, NAN]  # 4 NaNs: more than a quarter
    for seed in range(50):
        pairs = truncation_selection(metrics, rng(seed))
        assert sorted(loser for loser, _ in pairs) == [0, 2, 4, 7]
        assert {winner for _, winner in pairs} <= {3, 5}
    assert truncation_selection([NAN, 1.0], rng(0)) == [(0, 1)]
    assert truncation_selection([INF, 1.0], rng(0)) == [(0, 1)]  # inf ranks after every finite value


def test_truncation_without_a_finite_winner_plans_nothing():
    assert truncation_selection([], rng(0)) == []
    assert truncation_selection([1.0], rng(0)) == []
    assert truncation_selection([NAN, NAN, NAN], rng(0)) == []
    assert truncation_selection([INF, NAN], rng(0)) == []


def test_truncation_ties_rank_the_lower_index_first():
    pairs = truncation_selection([1.0] * 8, rng(3))
    assert sorted(loser for loser, _ in pairs) == [6, 7]
    assert {winner for _, winner in pairs} <= {0, 1}
    assert pairs == truncation_selection([1.0] * 8, rng(3))


# --------------------------------------------------------------------------------------------------
# binary_tournament
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 7, 8, 16, 40])
def test_tournament_pairs_are_disjoint_and_cover_everyone(n):
    g = rng(31)
    metrics = list(g.normal(size=n))
    for _ in range(20):
        pairs = binary_tournament(metrics, g)
        assert len(pairs) == n // 2
        members = [i for pair in pairs for i in pair]
        assert len(members) == len(set(members))  # disjoint
        assert all(isinstance(i, int) for i in members)
        assert set(members) <= set(range(n))
        assert len(set(range(n)) - set(members)) == n % 2  # odd population: exactly one sits out
        for loser, winner in pairs:
            assert metrics[loser] > metrics[winner]


def test_tournament_small_populations():
    assert binary_tournament([], rng(0)) == []
    assert binary_tournament([1.0], rng(0)) == []
    assert binary_tournament([2.0, 1.0], rng(0)) == [(0, 1)]
    assert binary_tournament([1.0, 2.0], rng(0)) == [(1, 0)]


def test_tournament_odd_population_everyone_sits_out_sometimes():
    g = rng(32)
    metrics = [5.0, 4.0, 3.0, 2.0, 1.0]
    sat_out = Counter()
    for _ in range(500):
        pairs = binary_tournament(metrics, g)
        (rest,) = set(range(5)) - {i for pair in pairs for i in pair}
        sat_out[rest] += 1
    assert set(sat_out) == set(range(5))
    assert all(60 < c < 140 for c in sat_out.values()), sat_out  # about 100 each


def test_tournament_nan_always_loses():
    g = rng(33)
    metrics = [NAN, 1e9, NAN, -5.0, 3.0, NAN]
    for _ in range(200):
        for loser, winner in binary_tournament(metrics, g):
            if math.isnan(metrics[loser]) or math.isnan(metrics[winner]):
                assert math.isnan(metrics[loser])  # a NaN loses; only a NaN can beat a NaN
            else:
                assert metrics[loser] > metrics[winner]
    # NaN against a finite value, whatever the order of indices
    assert binary_tournament([NAN, 1e300], rng(0)) == [(0, 1)]
    assert binary_tournament([1e300, NAN], rng(0)) == [(1, 0)]
    # two NaNs: deterministic (lower index wins)
    assert binary_tournament([NAN, NAN], rng(0)) == [(1, 0)]


def test_tournament_inf_loses_to_finite():
    assert binary_tournament([INF, 1.0], rng(0)) == [(0, 1)]
    assert binary_tournament([1.0, INF], rng(0)) == [(1, 0)]


def test_tournament_nan_loses_to_inf():
    assert binary_tournament([NAN, INF], rng(0)) == [(0, 1)]
    assert binary_tournament([INF, NAN], rng(0)) == [(1, 0)]


def test_tournament_ties_have_a_deterministic_winner():
    metrics = [1.0] * 8
    for seed in range(20):
        pairs = binary_tournament(metrics, rng(seed))
        assert pairs == binary_tournament(metrics, rng(seed))
        for loser, winner in pairs:
            assert winner < loser  # documented: ties go to the lower index


def test_tournament_reproducible_with_seed_and_varies_across_seeds():
    metrics = [float(m) for m in range(8)]
    a = binary_tournament(metrics, rng(41))
    assert a == binary_tournament(metrics, rng(41))
    pairings = {frozenset(frozenset(p) for p in binary_tournament(metrics, rng(seed))) for seed in range(10)}
    assert len(pairings) >= 8  # 105 possible pairings of 8 members
    assert binary_tournament(metrics, rng(41)) != binary_tournament(metrics, rng(42))


def test_tournament_every_pair_occurs_uniformly():
    n = 6
    g = rng(43)
    metrics = [float(i) for i in range(n)]
    counts = Counter()
    draws = 1500
    for _ in range(draws):
        for pair in binary_tournament(metrics, g):
            counts[frozenset(pair)] += 1
    assert set(counts) == {frozenset(p) for p in itertools.combinations(range(n), 2)}
    # each of the 15 pairs occurs with probability 1/5 per draw: 300 expected
    assert all(240 < c < 360 for c in counts.values()), counts


def test_tournament_accepts_numpy_arrays():
    metrics = np.array([3.0, np.nan, 1.0, 2.0])
    pairs = binary_tournament(metrics, rng(44))
    assert len(pairs) == 2
    for loser, winner in pairs:
        assert not np.isnan(metrics[winner])
        assert np.isnan(metrics[loser]) or metrics[loser] > metrics[winner]


# --------------------------------------------------------------------------------------------------
# plan_exploits
# --------------------------------------------------------------------------------------------------


def test_plan_exploits_records():
    space = small_space()
    metrics = [4.0, 1.0, NAN, 2.0, 3.0, 0.5]
    hparams = [{"lr_init": 1e-3 * (i + 1) / 2, "dropout_rate": 0.05 * (i + 1), "cd_rate": 0.5} for i in range(6)]
    snapshot = [dict(h) for h in hparams]
    exploits = plan_exploits(7, metrics, hparams, space, rng(51), "tournament")
    assert len(exploits) == 3
    assert all(isinstance(e, Exploit) for e in exploits)
    assert sorted(i for e in exploits for i in (e.loser, e.winner)) == list(range(6))
    for e in exploits:
        assert e.generation == 7
        assert e.loser_metric == metrics[e.loser] or (math.isnan(e.loser_metric) and math.isnan(metrics[e.loser]))
        assert e.winner_metric == metrics[e.winner]
        assert not math.isnan(e.winner_metric)
        assert math.isnan(e.loser_metric) or e.loser_metric > e.winner_metric
        assert e.old == hparams[e.loser]
        winner = hparams[e.winner]
        assert set(e.new) == set(winner)
        assert e.new["cd_rate"] == winner["cd_rate"]  # not searched: copied unchanged
        for name in ("lr_init", "dropout_rate"):
            assert e.new[name] != winner[name]
            ratio = abs(math.log(e.new[name] / winner[name]))
            assert math.log1p(0.0006) * (1 - 1e-9) <= ratio <= math.log1p(0.3) * (1 + 1e-9)
    assert hparams == snapshot  # inputs untouched
    # the pairing matches binary_tournament's on the same seed; whole plan is reproducible
    assert [(e.loser, e.winner) for e in exploits] == binary_tournament(metrics, rng(51))
    assert plan_exploits(7, metrics, hparams, space, rng(51), "tournament") == exploits


def test_plan_exploits_truncation_is_the_default():
    space = small_space()
    metrics = [4.0, 1.0, NAN, 2.0, 3.0, 0.5, 5.0, 6.0]
    hparams = [{"lr_init": 1e-3 * (i + 1) / 2, "dropout_rate": 0.05 * (i + 1)} for i in range(8)]
    exploits = plan_exploits(3, metrics, hparams, space, rng(53))
    assert [(e.loser, e.winner) for e in exploits] == truncation_selection(metrics, rng(53))
    assert sorted(e.loser for e in exploits) == [2, 7]  # the NaN member and the worst; 6 is third from the bottom
    for e in exploits:
        assert e.winner in (5, 1) and e.winner_metric == metrics[e.winner] and e.old == hparams[e.loser]
        assert set(e.new) == set(hparams[e.winner]) and e.new != hparams[e.winner]  # perturbed
    with pytest.raises(KeyError):
        plan_exploits(3, metrics, hparams, space, rng(53), "roulette")


def test_plan_exploits_copies_are_independent():
    space = small_space()
    hparams = [{"lr_init": 1e-3, "dropout_rate": 0.2}, {"lr_init": 2e-3, "dropout_rate": 0.3}]
    (e,) = plan_exploits(0, [2.0, 1.0], hparams, space, rng(52))
    e.old["lr_init"] = 99.0
    e.new["lr_init"] = 99.0
    assert hparams[0]["lr_init"] == 1e-3 and hparams[1]["lr_init"] == 2e-3


# --------------------------------------------------------------------------------------------------
# best_member
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metrics, best",
    [
        ([3.0, 1.0, 2.0], 1),
        ([NAN, 5.0, 4.0], 2),
        ([NAN, NAN, 7.0], 2),
        ([2.0, 2.0, 3.0], 0),  # tie: lowest index
        ([5.0, 1.0, 1.0], 1),
        ([NAN, NAN, NAN], 0),  # all NaN: index 0
        ([INF, 3.0], 1),
        ([-1.0, NAN, -2.0], 2),
        ([4.0], 0),
    ],
)
def test_best_member(metrics, best):
    assert best_member(metrics) == best


def test_best_member_nan_never_beats_inf():
    assert best_member([NAN, INF]) == 1


# --------------------------------------------------------------------------------------------------
# should_stop
# --------------------------------------------------------------------------------------------------


def test_stop_constants():
    assert STOP_WINDOW == 4 and STOP_RATIO == 5e-4


def test_steady_improvement_does_not_stop():
    best = [10.0 - 1e-2 * g for g in range(30)]  # 3e-2 over 4 generations: ratio ~3e-3 > 5e-4
    for n in range(1, 31):
        assert not should_stop(best[:n], max_generations=50)
    relative = [1.0 * 0.99**g for g in range(30)]  # 1 % per generation
    for n in range(1, 31):
        assert not should_stop(relative[:n], max_generations=50)


def test_plateau_stops():
    # improves, then stalls: the running best at the window's first generation is 2.0, now 2.0 - 1e-4 (ratio 5e-5)
    best = [3.0, 2.5, 2.0, 1.99995, 1.9999, 1.9999]
    assert not should_stop(best[:4], 50)  # 2.5 -> 1.99995 over the last 4: big improvement
    assert not should_stop(best[:5], 50)  # 2.5 -> 1.9999
    assert should_stop(best[:6], 50)  # 2.0 -> 1.9999: ratio 5e-5
    # plain bools either way: the Ray scheduler writes the decision into pbt_state.json (numpy's bool is no JSON)
    assert json.dumps([should_stop(best[:5], 50), should_stop(best[:6], 50)]) == "[false, true]"


def test_plateau_of_equal_values_stops_after_window():
    """Four equal generation bests stop, as lfads-torch's ImprovementRatioStopper(patience=4) and tune-tf2's
    scheduler (a window of 4 bests, the first against the best of them) stop."""
    assert not should_stop([1.0] * 3, 50)
    assert should_stop([1.0] * 4, 50)


def test_exact_threshold_stops_and_just_above_does_not():
    # (2000 - 1999) / 2000 == 5e-4 exactly in floating point
    assert (2000.0 - 1999.0) / 2000.0 == 5e-4
    assert should_stop([2000.0, 2000.0, 2000.0, 1999.0], 50)
    assert not should_stop([2000.0, 2000.0, 2000.0, 1998.99], 50)  # ratio 5.05e-4
    assert not should_stop([2000.0, 1999.5, 1999.2, 1998.0], 50)  # ratio 1e-3


def test_ratio_is_relative_to_the_first_generation_of_the_window():
    # 1 -> 0.999 (ratio 1e-3) counted from 3 generations back; the first value (much larger) is out of the window
    best = [100.0, 1.0, 1.0, 1.0, 0.999]
    assert not should_stop(best, 50)
    # an old big drop does not hold the run alive once it leaves the window
    best = [100.0, 1.0, 1.0, 1.0, 1.0]
    assert should_stop(best, 50)
    # uses the running best: a worse latest generation does not count as a regression or an improvement
    assert should_stop([1.0, 1.0, 1.0, 1.0, 1.5], 50)
    assert not should_stop([2.0, 1.0, 1.5, 1.5], 50)
    # negative metrics: relative to |value|
    assert should_stop([-100.0, -100.0, -100.0, -100.01], 50)
    assert not should_stop([-100.0, -100.0, -100.0, -100.1], 50)


def test_fewer_than_four_generations_never_stop():
    for n in range(0, 4):
        assert not should_stop([1.0] * n, 50)


def test_max_generations_stops():
    improving = [10.0 - g for g in range(10)]
    assert not should_stop(improving[:9], max_generations=10)
    assert should_stop(improving, max_generations=10)
    assert should_stop(improving[:3], max_generations=3)
    assert should_stop(improving[:3], max_generations=2)
    assert should_stop([100.0 - g for g in range(50)], max_generations=50)


@pytest.mark.parametrize(
    "best",
    [
        [NAN, NAN, NAN, NAN],
        [INF, INF, INF, INF],
        [NAN, 2.0, 2.0, 2.0],  # reference (running best 3 back) is NaN
        [INF, 2.0, 2.0, 2.0],  # reference is inf
        [NAN, INF, NAN, INF, 2.0, 2.0, 2.0],  # reference still not finite
    ],
)
def test_non_finite_reference_never_stops(best):
    with np.errstate(all="raise"):
        assert not should_stop(best, 50)


def test_nan_after_finite_values_is_ignored_by_running_best():
    # running best ignores later NaN generations: 2.0 throughout -> plateau
    assert should_stop([2.0, NAN, NAN, NAN], 50)
    # a NaN first, then a finite plateau: stops once the reference is finite
    best = [NAN, 2.0, 2.0, 2.0, 2.0]
    assert should_stop(best, 50)


# --------------------------------------------------------------------------------------------------
# generation_epochs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "generation, per_gen, ramp, expected",
    [(0, 25, 80, 105), (1, 25, 80, 25), (7, 25, 80, 25), (0, 50, 0, 50), (3, 50, 0, 50), (0, 1, 1, 2)],
)
def test_generation_epochs(generation, per_gen, ramp, expected):
    assert generation_epochs(generation, per_gen, ramp) == expected


# ----------------------------------------------------------------------------------------- the time budget, pure


def test_next_generation_time_and_the_budget_rule_by_hand():
    # generation 0: 30 epochs (20 ramp + 10) in 30 s -> 1 s an epoch -> the next 10-epoch generation ~ 10 s
    assert next_generation_s([30.0], first_epochs=30, epochs_per_generation=10) == 10.0
    # later: the mean of the generations after the burn-in
    assert next_generation_s([30.0, 12.0, 14.0], 30, 10) == 13.0
    assert not over_budget(40.0, [30.0], 30, 10, budget_s=50.0)  # 40 + 10 fits exactly
    assert over_budget(40.5, [30.0], 30, 10, budget_s=50.0)  # the next one would end past the budget
    assert over_budget(60.0, [30.0, 12.0], 30, 10, budget_s=50.0)  # already spent
    # 1 + floor((65 - 30) / 10): the first generation and three of 10 s
    assert planned_generations(30.0, [30.0], 30, 10, 65.0) == 4
    assert planned_generations(80.0, [80.0], 30, 10, 65.0) == 1  # the first one overran: it is all there is
    # re-estimated later from the generations past the first: 30 + 5 + 5 spent, 25 s left at 5 s each
    assert planned_generations(40.0, [30.0, 5.0, 5.0], 30, 10, 65.0) == 3 + 5


# ----------------------------------------------------------------------------------------- the ensemble, pure


def test_ranking_puts_the_best_first_and_leaves_out_nan():
    assert ranking([0.5, math.nan, 0.2, 0.5, -1.0]) == [4, 2, 0, 3]
