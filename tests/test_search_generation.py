"""search/generation.py: the SearchDriver's generations with a fake clock. The time budget stops after the
generation the next would overrun and a larger one continues; without exploits the plan is empty and the random
stream untouched."""

from pathlib import Path

import numpy as np
import pytest

from autolfads.names import ALL_METRIC, HELDIN_METRIC
from autolfads.search.generation import SearchDriver
from autolfads.search.progress import SearchProgress
from autolfads.search.results import SearchRecord, SearchSettings
from autolfads.search.space import default_search_space

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
