"""The search's mechanisms around PBT: the selection metric's settings, the random-search control (no exploits),
the time budget (a fake clock in the pure logic, then a tiny search) and the ensemble of the best members."""

import argparse
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from autolfads.cli import main
from autolfads.cli.search import add_search_options, duration_s, search_settings, selection_overrides
from autolfads.config import saved_config
from autolfads.data.hdf5 import write_lfads_h5
from autolfads.errors import ConfigError
from autolfads.evaluate.files import read_output_rates
from autolfads.names import ALL_METRIC, HELDIN_METRIC
from autolfads.search.ensemble import choose_k, mean_rates, nll_per_entry
from autolfads.search.generation import SearchDriver
from autolfads.search.pbt import next_generation_s, over_budget, planned_generations, ranking
from autolfads.search.progress import SearchProgress
from autolfads.search.results import SearchRecord, SearchSettings, saved_settings
from autolfads.search.run import search
from autolfads.search.space import default_search_space
from autolfads.train.checkpoint import load_checkpoint
from autolfads.train.output import posterior_sample
from autolfads.train.population_state import PopulationState
from autolfads.train.run import load_run_data
from autolfads.train.trainer import Trainer
from helpers import read_csv, tiny_config, tiny_search_data

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


HPARAMS = default_search_space().sample_initial(4, np.random.default_rng(0))  # four members' values


class FakeClock:
    """Seconds that advance by the given steps, one per call after the first."""

    def __init__(self, steps: list[float]):
        self.now, self.steps = 0.0, iter(steps)

    def __call__(self) -> float:
        value = self.now
        self.now += next(self.steps, 0.0)
        return value


def _driver(tmp_path: Path, settings: SearchSettings, clock, record: SearchRecord | None = None) -> SearchDriver:
    tmp_path.mkdir(exist_ok=True)  # the driver writes the tables there
    lines: list[str] = []
    progress = SearchProgress(settings.population, settings.max_generations, ALL_METRIC, log=lines.append)
    driver = SearchDriver(
        tmp_path, settings, default_search_space(), record or SearchRecord(), lines.append, progress, ALL_METRIC, clock
    )
    driver.lines = lines
    return driver


def _generation(driver: SearchDriver, generation: int, applied: list) -> list:
    """One end of a generation of 4 members whose metrics improve steadily (no plateau stop)."""
    metrics = {name: [2.0 - 0.1 * generation - 0.01 * m for m in range(4)] for name in (ALL_METRIC, HELDIN_METRIC)}
    hparams = [dict(values) for values in HPARAMS]
    epoch = 30 + 10 * generation
    return driver.end_generation(epoch, hparams, metrics, applied.append, lambda: None, list)


def test_the_budget_stops_after_the_generation_the_next_would_overrun_and_a_larger_one_continues(tmp_path):
    # generations of 30 s (30 epochs), 12 s, 14 s: after the third 56 s are spent and the next is estimated at
    # 13 s, 69 > 65: stop. A rerun with 100 s plans the third generation's exploits then, from the same stream.
    budget = SearchSettings(population=4, epochs_per_generation=10, max_generations=None, time_budget_s=65.0)
    driver = _driver(tmp_path / "budget", budget, FakeClock([30.0, 12.0, 14.0]))
    applied: list = []
    for generation in range(3):
        _generation(driver, generation, applied)
        assert driver.record.finished == (generation == 2)
    record = driver.record
    assert record.stop_reason == "time_budget" and record.generation_s == [30.0, 12.0, 14.0]
    assert record.wall_time_s == 56.0 and applied[-1] == []  # no exploits after the last generation
    assert any("about 4 generations fit" in line for line in driver.lines)

    unstopped = _driver(
        tmp_path / "free", SearchSettings(population=4, epochs_per_generation=10, max_generations=9), FakeClock([1.0])
    )
    expected = [_generation(unstopped, generation, []) for generation in range(3)][-1]
    larger = budget.model_copy(update={"time_budget_s": 100.0})
    rerun = _driver(tmp_path / "budget", larger, FakeClock([]), SearchRecord.from_dict(record.to_dict()))
    continued: list = []
    metrics = {name: [1.8 - 0.01 * m for m in range(4)] for name in (ALL_METRIC, HELDIN_METRIC)}
    assert rerun.reopen([dict(values) for values in HPARAMS], metrics, continued.append, lambda: None)
    assert continued == [expected] and expected  # the exploits the unstopped search made after generation 2
    assert not rerun.record.finished and rerun.record.stop_reason == ""
    same = _driver(tmp_path / "budget", budget, FakeClock([]), SearchRecord.from_dict(record.to_dict()))
    assert not same.reopen([{}] * 4, metrics, pytest.fail, pytest.fail)  # the same budget: it stays finished
    assert any("the time budget is spent" in line for line in same.lines)


def test_without_exploits_the_plan_is_empty_and_the_random_stream_untouched(tmp_path):
    settings = SearchSettings(population=4, epochs_per_generation=10, max_generations=3, exploit=False)
    driver = _driver(tmp_path, settings, FakeClock([1.0] * 3))
    start = driver.rng.bit_generator.state
    applied: list = []
    for generation in range(3):
        assert _generation(driver, generation, applied) == []
    assert applied == [[], [], []] and driver.record.exploit_rows == []
    assert driver.rng.bit_generator.state == start and driver.record.stop_reason == "max_generations"


# ----------------------------------------------------------------------------------------- settings and old files


def test_search_settings_bounds_and_the_time_budget_option():
    with pytest.raises(ValueError, match="only with a time budget"):
        SearchSettings(max_generations=None)
    assert SearchSettings(max_generations=None, time_budget_s=600.0).max_generations is None
    assert [duration_s(text) for text in ("90s", "10m", "1.5h")] == [90.0, 600.0, 5400.0]
    for bad in ("10", "m", "-5m", "0s", "10d"):
        with pytest.raises(argparse.ArgumentTypeError):
            duration_s(bad)


def test_the_command_line_maps_metric_onto_train_select_metric_and_budget_onto_the_settings():
    parser = argparse.ArgumentParser()
    add_search_options(parser)
    parser.add_argument("--metric")
    parser.add_argument("--backend", default="embedded")

    def settings_of(*argv: str) -> tuple[SearchSettings, list[str]]:
        args = parser.parse_args(["--workdir", "w", "--epochs-per-generation", "5", *argv])
        return search_settings(args), selection_overrides(args, ["train.lr_init", "0.01"])

    settings, overrides = settings_of("--metric", HELDIN_METRIC)
    assert settings.metric is None and overrides[-2:] == ["train.select_metric", HELDIN_METRIC]  # one setting
    settings, overrides = settings_of("--metric", "nlb_co_bps", "--no-exploit")
    assert settings.metric == "nlb_co_bps" and overrides == ["train.lr_init", "0.01"] and not settings.exploit
    assert settings_of()[0].max_generations == 50 and settings_of()[0].time_budget_s is None
    budget = settings_of("--time-budget", "2m")[0]
    assert budget.time_budget_s == 120.0 and budget.max_generations is None  # the budget alone bounds it
    assert settings_of("--time-budget", "2m", "--max-generations", "4")[0].max_generations == 4


def test_files_saved_before_the_selection_metric_existed_keep_the_held_in_score(tmp_path):
    old = tiny_config().to_dict()
    del old["train"]["select_metric"]
    assert saved_config(old).train.select_metric == HELDIN_METRIC  # a saved run meant the held-in score
    assert tiny_config().train.select_metric == ALL_METRIC  # a new one: the default
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({**SearchSettings().model_dump(), "metric": HELDIN_METRIC}))
    assert saved_settings(path).metric is None  # PBT ranked by the selection metric: the config's held-in one


# ----------------------------------------------------------------------------------------- the ensemble, pure


def test_ranking_puts_the_best_first_and_leaves_out_nan():
    assert ranking([0.5, math.nan, 0.2, 0.5, -1.0]) == [4, 2, 0, 3]


def test_nll_per_entry_and_the_choice_of_k_by_hand():
    counts = np.array([[[0.0, 2.0]], [[1.0, np.nan]]])  # 2 trials, 1 bin, 2 neurons; one entry missing
    rates = np.array([[[1.0, 2.0]], [[1.0, 5.0]]])
    # r - n log r over the 3 observed entries: 1, 2 - 2 log 2, 1
    assert nll_per_entry([rates], [counts], [0]) == pytest.approx((4 - 2 * math.log(2)) / 3)
    # one session of 1 trial x 1 bin x 2 neurons with counts (2, 2): rates (2, 2) are the best possible. Member
    # rates (1, 3), (3, 1), (2, 2.2): the mean of the first two is (2, 2), so k = 2 beats k = 1 and k = 3.
    target = [np.array([[[2.0, 2.0]]])]
    members = [[np.array([[[1.0, 3.0]]])], [np.array([[[3.0, 1.0]]])], [np.array([[[2.0, 2.2]]])]]
    k, scores = choose_k(members, target, [0])
    assert k == 2 and scores[1] == pytest.approx(2 - 2 * math.log(2))
    assert scores[0] == pytest.approx((1 + 3 - 2 * math.log(3)) / 2)
    assert choose_k(members[:1] * 3, target, [0])[0] == 1  # ties go to the smaller k
    np.testing.assert_array_equal(mean_rates([members[0][0], members[1][0]]), np.full((1, 1, 2), 2.0, np.float32))


# ----------------------------------------------------------------------------------------- tiny searches


@pytest.fixture(scope="module")
def lorenz(tmp_path_factory) -> Path:
    return tiny_search_data(tmp_path_factory.mktemp("data") / "lorenz.h5")


@pytest.mark.slow
def test_a_random_search_control_keeps_every_members_hyperparameters_and_weights(lorenz, tmp_path):
    settings = SearchSettings(population=4, epochs_per_generation=2, max_generations=3, exploit=False)
    outcome = search(tiny_config(), lorenz, tmp_path, settings)
    assert not (tmp_path / "exploits.csv").exists()
    state = read_csv(tmp_path / "state.csv")
    for member in range(4):
        rows = [row for row in state if int(row["member"]) == member]
        assert len(rows) == 3 and all(row["lr_init"] == rows[0]["lr_init"] for row in rows)
    best = min(
        (row for row in state if row["generation"] == "2"), key=lambda row: float(row[ALL_METRIC])
    )  # chosen as with PBT: the last generation's lowest selection metric
    assert outcome.best_member == int(best["member"]) and outcome.select_metric == ALL_METRIC


@pytest.fixture(scope="module")
def finished(lorenz, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("search")
    outcome = search(
        tiny_config(), lorenz, workdir, SearchSettings(population=4, epochs_per_generation=2, max_generations=2)
    )
    return outcome, workdir


@pytest.mark.slow
def test_the_ensemble_averages_the_chosen_members_rates_and_passes_the_evaluator(finished, lorenz):
    outcome, workdir = finished
    record = yaml.safe_load((workdir / "ensemble" / "ensemble.yaml").read_text())
    members = record["members"]
    assert members[0] == outcome.best_member and len(members) == record["k"] == len(outcome.ensemble.members)
    assert min(record["valid_nll_by_k"].values()) == pytest.approx(outcome.ensemble.score)
    assert record["valid_nll_by_k"][1] == pytest.approx(outcome.ensemble.best_score)
    # every member's rates as `autolfads sample` of its final state would write them, averaged by hand
    config, data = load_run_data(tiny_config(), lorenz)
    population = PopulationState.from_dict(load_checkpoint(workdir / "search.ckpt"))
    ours = read_output_rates(workdir / "ensemble" / "lfads_output.h5")  # the evaluator's reader checks the rates
    by_hand = {split.name: [] for split in data[0].splits}
    for member in members:
        trainer = Trainer(config, data)
        trainer.load_population_state(population.select([member]))
        for split in data[0].splits:
            by_hand[split.name].append(posterior_sample(trainer.model, split, config.train.num_samples)["rates"][0])
    for split, rates in by_hand.items():
        np.testing.assert_allclose(ours[split][1], np.mean(rates, axis=0), rtol=1e-5)
    best = read_output_rates(workdir / "best_model" / "lfads_output.h5")
    np.testing.assert_array_equal(best["valid"][1], by_hand["valid"][0])  # the best member's own file
    with h5py.File(workdir / "ensemble" / "lfads_output.h5") as ens, h5py.File(outcome.outputs[0]) as own:
        assert set(ens) == set(own) and np.array_equal(ens["valid_factors"][()], own["valid_factors"][()])
        assert list(ens.attrs["ensemble_members"]) == members
    assert (workdir / "ensemble" / "config.yaml").read_text() == (workdir / "best_model" / "config.yaml").read_text()
    assert (
        "ensemble:" in outcome.summary() and f"best member alone {outcome.ensemble.best_score:.5f}" in outcome.summary()
    )


@pytest.mark.slow
def test_sampling_the_ensemble_folder_averages_its_members_on_the_data_given(finished, lorenz, tmp_path, capsys):
    """`autolfads sample --checkpoint WORKDIR/ensemble`: on the search's own data, the ensemble's own file again
    (each member's kept run folder samples as the search did); on a subset of the trials, those trials' rates."""
    outcome, workdir = finished
    folder = workdir / "ensemble"
    members = yaml.safe_load((folder / "ensemble.yaml").read_text())["members"]
    assert sorted(p.name for p in (folder / "members").iterdir()) == sorted(map(str, members))
    again = tmp_path / "again.h5"
    assert main(["sample", "--checkpoint", str(folder), "--data", str(lorenz), "--output", str(again)]) == 0
    ours, theirs = read_output_rates(folder / "lfads_output.h5"), read_output_rates(again)
    for split in ours:
        np.testing.assert_array_equal(theirs[split][0], ours[split][0])
        np.testing.assert_allclose(theirs[split][1], ours[split][1], rtol=1e-6)
    with h5py.File(again) as h5:
        assert list(h5.attrs["ensemble_members"]) == members
    # other trials: the valid trials given as a file of their own are sampled, and averaged, all the same
    with h5py.File(lorenz) as source:
        arrays = {key: source[key][()] for key in source}
    subset = tmp_path / "subset.h5"
    write_lfads_h5(subset, {**{k: v for k, v in arrays.items() if not k.startswith("train_")},
                            **{"train" + k[5:]: v for k, v in arrays.items() if k.startswith("valid_")}})  # fmt: skip
    other = tmp_path / "other.h5"
    assert main(["sample", "--checkpoint", str(folder), "--data", str(subset), "--output", str(other)]) == 0
    assert read_output_rates(other)["valid"][1].shape == ours["valid"][1].shape
    (folder / "members" / str(members[-1]) / "last.ckpt").rename(tmp_path / "moved.ckpt")
    try:
        assert main(["sample", "--checkpoint", str(folder), "--output", str(tmp_path / "x.h5")]) == 2
        assert "the members' checkpoints are not there" in capsys.readouterr().err
    finally:
        (tmp_path / "moved.ckpt").rename(folder / "members" / str(members[-1]) / "last.ckpt")


@pytest.mark.slow
def test_a_time_budget_stops_the_search_and_a_larger_one_continues_it(lorenz, tmp_path):
    """A budget far smaller than one generation: the search stops after generation 0 with best_model and the
    ensemble written; a rerun with a huge budget continues (counting the time spent) up to --max-generations."""
    tight = SearchSettings(population=2, epochs_per_generation=2, max_generations=3, time_budget_s=0.01)
    outcome = search(tiny_config(), lorenz, tmp_path, tight)
    assert outcome.generations == 1 and outcome.stop_reason == "time_budget"
    assert (tmp_path / "best_model" / "lfads_output.h5").is_file() and outcome.ensemble is not None
    spent = outcome.wall_time_s
    again = search(tiny_config(), lorenz, tmp_path, tight)  # the same budget: nothing more to train
    assert again.generations == 1 and again.wall_time_s == spent
    larger = search(tiny_config(), lorenz, tmp_path, tight.model_copy(update={"time_budget_s": 3600.0}))
    assert larger.generations == 3 and larger.stop_reason == "max_generations" and larger.wall_time_s > spent
    assert len(read_csv(tmp_path / "exploits.csv")) == 2 * 1  # after generations 0 and 1, one pair each
    with pytest.raises(ConfigError, match="different settings"):
        search(tiny_config(), lorenz, tmp_path, tight.model_copy(update={"population": 3}))


@pytest.mark.slow
def test_the_selection_metric_ranks_the_search_and_a_resume_keeps_it(lorenz, tmp_path):
    config = tiny_config()
    config.train.select_metric = HELDIN_METRIC
    settings = SearchSettings(population=4, epochs_per_generation=2, max_generations=2, seed=5)
    outcome = search(config, lorenz, tmp_path, settings)
    state = [row for row in read_csv(tmp_path / "state.csv") if row["generation"] == "0"]
    for row in read_csv(tmp_path / "exploits.csv"):
        loser, winner = (next(r for r in state if r["member"] == row[key]) for key in ("loser", "winner"))
        assert float(row["loser_metric"]) == pytest.approx(float(loser[HELDIN_METRIC]))
        assert float(loser[HELDIN_METRIC]) >= float(winner[HELDIN_METRIC])
    assert outcome.select_metric == HELDIN_METRIC and torch.isfinite(torch.tensor(outcome.best_metric))
    resumed = search(tiny_config(), lorenz, tmp_path, settings)  # the config now names the default: kept
    assert resumed.select_metric == HELDIN_METRIC and resumed.best_member == outcome.best_member
    assert "train.select_metric stays smth_val_nll_heldin" in (tmp_path / "search.log").read_text()
