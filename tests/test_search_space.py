"""search/space.py: the search space. Hyperparameter fields, sampling, explore/perturb, the default and
small-session spaces, and YAML loading.

Expectations follow /work/shared/reference/autolfads-pbt-spec.md; every random test uses a fixed seed."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from scipy import stats

from autolfads.config import load_config
from autolfads.errors import ConfigError
from autolfads.names import MEMBER_HPARAMS
from autolfads.search.space import (
    PERTURB_TRIES,
    HyperParameter,
    SearchSpace,
    default_search_space,
    load_search_space,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------------
# HyperParameter: validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        dict(low=1.0, high=1.0),  # low == high
        dict(low=2.0, high=1.0),  # low > high
        dict(low=0.0, high=1.0, log=True),  # log range needs low > 0
        dict(low=-1.0, high=1.0),  # negative low
        dict(low=0.1, high=0.5, initial=0.6),  # initial above the limits
        dict(low=0.1, high=0.5, initial=0.05),  # initial below the limits
        dict(low=1e-5, high=5e-3, log=True, initial=1e-2),  # log range, initial above
        dict(low=0.1, high=0.5, explore_weight=0.0),  # explore weight must be positive
        dict(low=0.1, high=0.5, explore_weight=-0.3),
        dict(low=0.1, high=0.5, bogus=1.0),  # unknown field
        dict(low=0.1, high=0.5, log_uniform=True),  # a typo of `log` is not silently ignored
    ],
)
def test_hyperparameter_invalid_fields_raise(fields):
    with pytest.raises(ValidationError):
        HyperParameter(**fields)


def test_hyperparameter_valid_edges_and_defaults():
    hp = HyperParameter(low=0.1, high=0.5)
    assert (hp.log, hp.explore_weight, hp.enforce_limits, hp.initial) == (False, 0.3, True, None)
    # initial exactly on the limits is allowed
    assert HyperParameter(low=0.1, high=0.5, initial=0.1).initial == 0.1
    assert HyperParameter(low=0.1, high=0.5, initial=0.5).initial == 0.5
    # a uniform range may start at 0 (dropout)
    assert HyperParameter(low=0.0, high=0.6).low == 0.0
    with pytest.raises(ValidationError):  # frozen
        hp.low = 0.2


def test_hyperparameter_negative_initial_without_limits_raises():
    with pytest.raises(ValidationError):
        HyperParameter(low=1e-4, high=1.0, log=True, enforce_limits=False, initial=-1.0)


# --------------------------------------------------------------------------------------------------
# HyperParameter: sampling
# --------------------------------------------------------------------------------------------------


def test_sample_log_uniform_range_and_distribution():
    hp = HyperParameter(low=1e-6, high=1e-2, log=True)
    g = rng(2)
    values = np.array([hp.sample(g) for _ in range(4000)])
    assert values.min() >= 1e-6 and values.max() <= 1e-2
    # log10(values) is uniform on [-6, -2]
    assert stats.kstest(np.log10(values), stats.uniform(loc=-6, scale=4).cdf).pvalue > 1e-3
    # four decades, about a quarter of the samples in each (a uniform sampler would put ~99 % in the last)
    decades = Counter(np.floor(np.log10(values)).astype(int).tolist())
    for decade in (-6, -5, -4, -3):
        assert abs(decades[decade] / len(values) - 0.25) < 0.04, decades


def test_sample_uniform_range_and_distribution():
    hp = HyperParameter(low=0.01, high=0.7)
    g = rng(3)
    values = np.array([hp.sample(g) for _ in range(4000)])
    assert values.min() >= 0.01 and values.max() <= 0.7
    assert stats.kstest(values, stats.uniform(loc=0.01, scale=0.69).cdf).pvalue > 1e-3
    # not log-uniform: the lower tenth of the range holds about a tenth of the samples
    assert abs(np.mean(values < 0.01 + 0.069) - 0.1) < 0.03


def test_sample_is_reproducible_with_seed():
    hp = HyperParameter(low=1e-5, high=5e-3, log=True)
    a = [hp.sample(g) for g in [rng(7)] for _ in range(5)]
    b = [hp.sample(g) for g in [rng(7)] for _ in range(5)]
    c = [hp.sample(g) for g in [rng(8)] for _ in range(5)]
    assert a == b and a != c


# --------------------------------------------------------------------------------------------------
# HyperParameter: perturb (explore)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("w", [0.3, 0.8])
def test_perturb_factor_magnitude_and_sign_without_clipping(w):
    hp = HyperParameter(low=1e-3, high=1e3, log=True, explore_weight=w, enforce_limits=False)
    g = rng(11)
    value = 1.0
    log_ratios = np.array([math.log(hp.perturb(value, g) / value) for _ in range(4000)])
    lo, hi = math.log1p(0.002 * w), math.log1p(w)
    magnitudes = np.abs(log_ratios)
    assert magnitudes.min() >= lo * (1 - 1e-9) and magnitudes.max() <= hi * (1 + 1e-9)
    # the magnitude is uniform on [log(1 + 0.002 w), log(1 + w)] (a log-uniform factor)
    assert stats.kstest(magnitudes, stats.uniform(loc=lo, scale=hi - lo).cdf).pvalue > 1e-3
    # never the identity, both directions about equally often
    up = int(np.sum(log_ratios > 0))
    assert int(np.sum(log_ratios == 0)) == 0
    assert stats.binomtest(up, len(log_ratios), 0.5).pvalue > 1e-3
    assert 0.45 < up / len(log_ratios) < 0.55


def test_perturb_hand_computed_extremes():
    # w = 1: factors lie in [1.002, 2] or [0.5, 1/1.002]
    hp = HyperParameter(low=1e-3, high=1e3, explore_weight=1.0, enforce_limits=False)
    g = rng(12)
    values = np.array([hp.perturb(1.0, g) for _ in range(2000)])
    up, down = values[values > 1], values[values < 1]
    assert len(up) + len(down) == len(values)
    assert up.min() >= 1.002 - 1e-12 and up.max() <= 2.0 + 1e-12
    assert down.min() >= 0.5 - 1e-12 and down.max() <= 1 / 1.002 + 1e-12
    # both ends of the range are actually reached (not a fixed factor)
    assert up.max() > 1.9 and down.min() < 0.53 and up.min() < 1.05


def test_perturb_with_limits_stays_in_range_from_anywhere_inside():
    hp = HyperParameter(low=0.01, high=0.7, explore_weight=0.3)
    g = rng(13)
    for start in np.linspace(0.01, 0.7, 23):
        value = float(start)
        for _ in range(30):  # a chain of perturbations, as over many generations
            value = hp.perturb(value, g)
            assert 0.01 <= value <= 0.7


@pytest.mark.parametrize("bound", ["low", "high"])
def test_perturb_from_the_boundary_resamples_instead_of_piling_up(bound):
    hp = HyperParameter(low=0.01, high=0.7, explore_weight=0.3)
    start = hp.low if bound == "low" else hp.high
    g = rng(14)
    values = np.array([hp.perturb(start, g) for _ in range(2000)])
    assert np.all((values >= 0.01) & (values <= 0.7))
    # every accepted move is inward, strictly away from the bound: a clip would leave values at the bound
    assert np.all(values > 0.01) if bound == "low" else np.all(values < 0.7)
    if bound == "low":
        assert np.all(values >= 0.01 * 1.0006 * (1 - 1e-12)) and values.max() <= 0.01 * 1.3 * (1 + 1e-12)
        # resampled: the inward magnitude is still uniform over the whole range of log factors
        logs = np.log(values / 0.01)
    else:
        assert np.all(values <= 0.7 / 1.0006 * (1 + 1e-12)) and values.min() >= 0.7 / 1.3 * (1 - 1e-12)
        logs = np.log(0.7 / values)
    lo, hi = math.log1p(0.0006), math.log1p(0.3)
    assert stats.kstest(logs, stats.uniform(loc=lo, scale=hi - lo).cdf).pvalue > 1e-3


def test_perturb_near_boundary_is_resampled_distribution():
    # 0.68 is within one explore step of high = 0.7: upward candidates above 0.7 are redrawn, so the result is
    # never exactly 0.7 (a clip would put about 45 % of the mass on the bound)
    hp = HyperParameter(low=0.01, high=0.7, explore_weight=0.3)
    g = rng(15)
    values = np.array([hp.perturb(0.68, g) for _ in range(2000)])
    assert np.all((values >= 0.01) & (values <= 0.7))
    assert np.sum(values == 0.7) == 0
    # accepted upward moves exist (factor in (1, 0.7/0.68]) but are rare
    assert 0 < np.sum(values > 0.68) < 0.2 * len(values)


@pytest.mark.parametrize("value, expected", [(100.0, 0.7), (1e-6, 0.01), (0.95, 0.7), (0.005, 0.01)])
def test_perturb_clips_to_nearest_bound_when_every_try_fails(value, expected):
    # every candidate value * exp(+-0.262) stays outside [0.01, 0.7]: after PERTURB_TRIES tries, clip
    hp = HyperParameter(low=0.01, high=0.7, explore_weight=0.3)
    assert PERTURB_TRIES == 100
    g = rng(16)
    for _ in range(20):
        assert hp.perturb(value, g) == expected


def test_perturb_without_limits_stays_positive_and_can_leave_the_range():
    hp = HyperParameter(low=1e-4, high=1.0, log=True, explore_weight=0.8, enforce_limits=False)
    g = rng(17)
    value = 0.9
    above = False
    for _ in range(300):
        value = hp.perturb(value, g)
        assert value > 0 and math.isfinite(value)
        above = above or value > 1.0
    assert above
    # starting outside the range is fine and no clipping happens
    outside = [hp.perturb(50.0, g) for _ in range(200)]
    assert min(outside) >= 50.0 / 1.8 * (1 - 1e-12) and max(outside) <= 50.0 * 1.8 * (1 + 1e-12)
    tiny = [hp.perturb(1e-7, g) for _ in range(200)]
    assert max(tiny) < 1e-4 and min(tiny) > 0


def test_perturb_is_reproducible_with_seed():
    hp = HyperParameter(low=0.01, high=0.7)
    assert [hp.perturb(0.5, g) for g in [rng(5)] for _ in range(5)] == [
        hp.perturb(0.5, g) for g in [rng(5)] for _ in range(5)
    ]


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


def test_searchspace_rejects_unknown_names():
    with pytest.raises(ValidationError, match="learning_rate"):
        SearchSpace(params={"learning_rate": HyperParameter(low=1e-5, high=1e-2, log=True)})
    # a train.* name that is not per member (e.g. batch_size) is not searchable either
    with pytest.raises(ValidationError, match="batch_size"):
        SearchSpace(
            params={"lr_init": HyperParameter(low=1e-5, high=1e-2), "batch_size": HyperParameter(low=1, high=2)}
        )


def test_searchspace_accepts_every_trainer_member_name():
    space = SearchSpace(params={name: HyperParameter(low=0.1, high=0.5) for name in MEMBER_HPARAMS})
    assert set(space.params) == set(MEMBER_HPARAMS)


def test_searchspace_rejects_empty():
    with pytest.raises(ValidationError, match="empty"):
        SearchSpace(params={})


def test_sample_initial_fixed_and_sampled():
    space = small_space()
    members = space.sample_initial(16, rng(21))
    assert len(members) == 16
    for member in members:
        assert set(member) == {"lr_init", "dropout_rate"}
        assert member["lr_init"] == 0.004
        assert 0.0 <= member["dropout_rate"] <= 0.6
    dropouts = [m["dropout_rate"] for m in members]
    assert len(set(dropouts)) == 16  # sampled independently per member
    assert space.sample_initial(16, rng(21)) == members  # reproducible
    assert space.sample_initial(16, rng(22)) != members
    assert space.sample_initial(0, rng(21)) == []


def test_perturb_touches_only_searched_names():
    space = small_space()
    values = {"lr_init": 1e-3, "dropout_rate": 0.3, "cd_rate": 0.5, "kl_co_weight": 1e-5}
    before = dict(values)
    g = rng(23)
    for _ in range(50):
        new = space.perturb(values, g)
        assert set(new) == set(values)
        assert new["cd_rate"] == 0.5 and new["kl_co_weight"] == 1e-5
        assert new["lr_init"] != 1e-3 and new["dropout_rate"] != 0.3
        assert 1e-5 <= new["lr_init"] <= 5e-3 and 0.0 <= new["dropout_rate"] <= 0.6
        ratio = abs(math.log(new["lr_init"] / 1e-3))
        assert math.log1p(0.0006) * (1 - 1e-9) <= ratio <= math.log1p(0.3) * (1 + 1e-9)
    assert values == before  # the input is not modified


def test_default_search_space_matches_published_table():
    space = default_search_space()
    # name: (low, high, log, explore weight, limits enforced, initial)
    table = {
        "lr_init": (1e-5, 5e-3, True, 0.3, True, 0.004),
        "dropout_rate": (0.0, 0.6, False, 0.3, True, None),
        "cd_rate": (0.01, 0.7, False, 0.3, True, 0.5),
        "l2_gen_scale": (1e-4, 1.0, True, 0.8, False, None),
        "l2_con_scale": (1e-4, 1.0, True, 0.8, False, None),
        "kl_co_weight": (1e-6, 1e-4, True, 0.8, False, None),
        "kl_ic_weight": (None, 1e-3, True, 0.8, False, None),  # low: 1e-5 (paper) or 1e-6 (lfads-torch)
    }
    assert set(space.params) == set(table)
    for name, (low, high, log, w, limits, initial) in table.items():
        p = space.params[name]
        got = (p.low, p.high, p.log, p.explore_weight, p.enforce_limits, p.initial)
        if low is None:
            assert p.low in (1e-5, 1e-6), name
            low = p.low
        assert got == (low, high, log, w, limits, initial), name
    members = space.sample_initial(8, rng(24))
    assert all(m["lr_init"] == 0.004 and m["cd_rate"] == 0.5 for m in members)
    for m in members:
        for name, p in space.params.items():
            assert p.low <= m[name] <= p.high


def test_default_search_space_perturb_of_unenforced_names_can_leave_the_range():
    space = default_search_space()
    g = rng(25)
    values = {name: p.high for name, p in space.params.items()}
    seen_above = set()
    for _ in range(40):
        new = space.perturb(values, g)
        for name, p in space.params.items():
            assert new[name] > 0
            if p.enforce_limits:
                assert p.low <= new[name] <= p.high
            elif new[name] > p.high:
                seen_above.add(name)
    assert seen_above == {"l2_gen_scale", "l2_con_scale", "kl_co_weight", "kl_ic_weight"}


# --------------------------------------------------------------------------------------------------
# load_search_space
# --------------------------------------------------------------------------------------------------


def test_load_search_space_round_trip(tmp_path):
    space = small_space()
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space.to_dict()), encoding="utf-8")
    loaded = load_search_space(path)
    assert loaded == space
    assert loaded.to_dict() == space.to_dict()
    # the default space round-trips as well, and str paths work
    path.write_text(yaml.safe_dump(default_search_space().to_dict()), encoding="utf-8")
    assert load_search_space(str(path)) == default_search_space()


def test_load_search_space_hand_written_yaml(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "lr_init: {low: 1.0e-5, high: 5.0e-3, log: true}\n"
        "cd_rate:\n  low: 0.1\n  high: 0.6\n  explore_weight: 0.5\n  initial: 0.3\n",
        encoding="utf-8",
    )
    space = load_search_space(path)
    assert space.params["lr_init"] == HyperParameter(low=1e-5, high=5e-3, log=True)
    assert space.params["cd_rate"] == HyperParameter(low=0.1, high=0.6, explore_weight=0.5, initial=0.3)


def test_load_search_space_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as err:
        load_search_space(path)
    assert str(path) in str(err.value) and "not found" in str(err.value)


@pytest.mark.parametrize("text", ["- lr_init\n- cd_rate\n", "just a string\n", "", "42\n"])
def test_load_search_space_not_a_mapping(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_search_space(path)
    assert str(path) in str(err.value) and "mapping" in str(err.value)


def test_load_search_space_invalid_yaml(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("lr_init: {low: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_search_space(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "text, key",
    [
        ("lr_init: {low: 1.0e-5, high: 5.0e-3, bogus: 1}\n", "lr_init.bogus"),
        ("cd_rate: {low: 0.1, high: fast}\n", "cd_rate.high"),
        ("cd_rate: {low: 0.5, high: 0.1}\n", "cd_rate"),
        ("cd_rate: {low: 0.1, high: 0.5, explore_weight: -1}\n", "cd_rate.explore_weight"),
        ("lr_init: {low: 0.0, high: 5.0e-3, log: true}\n", "lr_init"),
        ("learning_rate: {low: 1.0e-5, high: 5.0e-3}\n", "learning_rate"),
        ("cd_rate: 0.5\n", "cd_rate"),
        ("{}\n", "empty"),
    ],
)
def test_load_search_space_bad_field_names_file_and_key(tmp_path, text, key):
    path = tmp_path / "space.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_search_space(path)
    message = str(err.value)
    assert str(path) in message and key in message, message
    assert "\n" not in message.strip()  # one line, no traceback-like dump


ROOT = Path(__file__).resolve().parents[1]


def test_small_search_space_loads_and_holds_the_small_session_penalties():
    space, published = load_search_space(ROOT / "examples" / "search_space_small.yaml"), default_search_space()
    assert set(space.params) == set(published.params)
    small = load_config(ROOT / "examples" / "configs" / "small_session.yaml")
    for name in ("kl_co_weight", "kl_ic_weight", "l2_gen_scale", "l2_con_scale"):
        value = getattr(small.train, name)
        assert space.params[name].low <= value <= space.params[name].high, name
    assert (
        space.params["kl_co_weight"].low >= published.params["kl_co_weight"].high
    )  # stronger KL than the published space
