"""The end of a generation, written once for every backend.

A backend trains the members a generation and hands over what they reached (epoch, hyperparameters,
last-epoch metrics); `SearchDriver.end_generation` then takes the same steps in the same order everywhere:
record the generation, apply the stopping rule, plan the exploits (the pure decisions of `pbt`), let the
backend apply them, advance the record, let the backend checkpoint, rewrite the tables, log the generation
and move the progress display. The backend supplies only how exploits are applied and how state is saved.
"""

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from ..names import HEADLINE_METRICS, PBT_METRICS, RANK_ONLY_METRICS, SELECT_METRICS
from ..train.records import RunLog
from .pbt import Exploit, best_member, over_budget, plan_exploits, planned_generations, should_stop
from .progress import SearchProgress
from .results import STOP_REASONS, SearchRecord, SearchSettings, write_tables
from .space import SearchSpace

# Last-epoch metrics copied into state.csv (those a backend reports).
STATE_METRICS = (*SELECT_METRICS, *HEADLINE_METRICS, "lr", *RANK_ONLY_METRICS)


def ranked(values: Sequence[float], metric: str) -> list[float]:
    """Metric values as PBT ranks them: lower is better."""
    return [PBT_METRICS[metric] * value for value in values]


def best_ranked(metrics: dict[str, list[float]], metric: str) -> int:
    """The member PBT ranks first by `metric` (NaN never wins); the summary's and the best model's member."""
    return best_member(ranked(metrics[metric], metric))


def state_metrics(rows: Sequence[dict]) -> dict[str, list[float]]:
    """STATE_METRICS columns of one last-epoch row per member (in member order)."""
    return {name: [float(row.get(name, math.nan)) for row in rows] for name in STATE_METRICS if name in rows[0]}


class SearchDriver:
    """The search's record, random stream, progress and log, and the end-of-generation steps on them."""

    def __init__(
        self,
        workdir,
        settings: SearchSettings,
        space: SearchSpace,
        record: SearchRecord,
        log: RunLog,
        progress: SearchProgress,
        select_metric: str,
        clock: Callable[[], float] = time.perf_counter,
    ):
        """record: a new one, or the one of a resumed search (its rng_state continues the random stream).
        select_metric: train.select_metric (the stopping rule; PBT's ranking unless settings.metric).
        clock: seconds (a test passes a fake one)."""
        self.workdir, self.settings, self.space, self.record, self.log, self.progress = (
            workdir,
            settings,
            space,
            record,
            log,
            progress,
        )
        self.select_metric, self.rank_metric = select_metric, settings.rank_metric(select_metric)
        self.rng = np.random.default_rng(settings.seed)
        if record.rng_state:
            self.rng.bit_generator.state = record.rng_state
        self.clock = clock
        self._lap_start = clock()  # wall time since the last end of a generation (or the start)

    def end_generation(
        self,
        epoch: int,
        hparams: list[dict[str, float]],
        metrics: dict[str, list[float]],
        apply_exploits: Callable[[list[Exploit]], None],
        checkpoint: Callable[[], None],
        metric_rows: Callable[[], list[dict]],
    ) -> list[Exploit]:
        """hparams and metrics: every member's, before any exploit. apply_exploits: restore each loser from its
        winner, THEN set the new hyperparameters. checkpoint: make the advanced record durable with the state.
        metric_rows: every completed per-epoch row, for metrics.csv."""
        record = self.record
        seconds = self._lap()
        record.add_generation(epoch, hparams, metrics, self.select_metric)
        record.generation_s.append(seconds)
        record.wall_time_s += seconds
        if self.settings.time_budget_s is not None:
            self._plan()
        record.stop_reason = self._stop_reason()
        record.finished = bool(record.stop_reason)
        exploits = [] if record.finished else self._exploits(record.generation, hparams, metrics)
        apply_exploits(exploits)
        record.add_exploits(exploits)
        record.generation += 1
        record.rng_state = self.rng.bit_generator.state
        checkpoint()
        write_tables(self.workdir, record, metric_rows())
        self._log_generation(seconds, metrics, exploits)
        for member, value in enumerate(metrics[self.select_metric]):
            self.progress.member_done(member, value)
        self.progress.generation_done(record.finished)
        return exploits

    def reopen(
        self,
        hparams: list[dict[str, float]],
        metrics: dict[str, list[float]],
        apply_exploits: Callable[[list[Exploit]], None],
        checkpoint: Callable[[], None],
    ) -> bool:
        """A search its time budget or --max-generations stopped, rerun under larger ones: when they now hold
        another generation (may_reopen), the last generation's exploits (planned now, from the same random
        stream, as if it had not stopped) are applied and the search goes on (True). hparams, metrics: the last
        generation's."""
        record = self.record
        if record.stop_reason not in ("time_budget", "max_generations"):
            return False
        if not self.may_reopen():
            if record.stop_reason == "time_budget":
                self.log(
                    f"the time budget is spent ({record.wall_time_s / 60:.1f} of "
                    f"{self.settings.time_budget_s / 60:.1f} min): the search stays finished; a larger --time-budget "
                    "continues it"
                )
            return False
        limit = (
            f"--max-generations ({self.settings.max_generations})"
            if record.stop_reason == "max_generations"
            else f"the time budget ({self.settings.time_budget_s / 60:.1f} min, {record.wall_time_s / 60:.1f} spent)"
        )
        exploits = self._exploits(record.generation - 1, hparams, metrics)
        apply_exploits(exploits)
        record.add_exploits(exploits)
        record.finished, record.stop_reason = False, ""
        record.rng_state = self.rng.bit_generator.state
        checkpoint()
        self.log(
            f"{limit} holds another generation: continuing after generation {record.generation - 1} with its "
            f"{len(exploits)} exploits"
        )
        return True

    def may_reopen(self) -> bool:
        """Its time budget or --max-generations stopped the search, and the larger ones it is rerun with hold
        another generation (a search whose best stopped improving stays stopped)."""
        record = self.record
        return (
            record.stop_reason in ("time_budget", "max_generations")
            and not should_stop(record.best_by_generation, self.settings.max_generations)
            and not self._over_budget()
        )

    def _lap(self) -> float:
        now = self.clock()
        seconds, self._lap_start = now - self._lap_start, now
        return seconds

    def _exploits(self, generation: int, hparams: list[dict[str, float]], metrics: dict[str, list[float]]):
        """PBT's decisions after `generation`; none in a random-search control (settings.exploit false)."""
        if not self.settings.exploit:
            return []
        values = ranked(metrics[self.rank_metric], self.rank_metric)
        return plan_exploits(generation, values, hparams, self.space, self.rng, self.settings.selection)

    def _stop_reason(self) -> str:
        """Why the search stops after the generation just recorded ("" : it goes on)."""
        record, settings = self.record, self.settings
        if should_stop(record.best_by_generation, settings.max_generations):
            limit = settings.max_generations
            return "max_generations" if limit is not None and len(record.best_by_generation) >= limit else "plateau"
        return "time_budget" if self._over_budget() else ""

    def _over_budget(self) -> bool:
        record, settings = self.record, self.settings
        return settings.time_budget_s is not None and over_budget(
            record.wall_time_s,
            record.generation_s,
            int(record.state_rows[0]["epoch"]),
            settings.epochs_per_generation,
            settings.time_budget_s,
        )

    def _plan(self) -> None:
        """How many generations the time budget holds, re-estimated after every generation (later ones, past
        the ramps, are shorter); said in the log after the first."""
        record, settings = self.record, self.settings
        first_s, first_epochs = record.generation_s[0], int(record.state_rows[0]["epoch"])
        planned = planned_generations(
            record.wall_time_s,
            record.generation_s,
            first_epochs,
            settings.epochs_per_generation,
            settings.time_budget_s,
        )
        if settings.max_generations is not None:
            planned = min(planned, settings.max_generations)
        self.progress.plan(planned)
        if record.generation == 0:
            self.log(
                f"time budget {settings.time_budget_s / 60:.1f} min: generation 0 ({first_epochs} epochs) took "
                f"{first_s:.1f} s; about {planned} generations fit ({settings.epochs_per_generation} epochs each "
                "after the first; re-estimated as they run)"
            )

    def _log_generation(self, seconds: float, metrics: dict[str, list[float]], exploits: list[Exploit]) -> None:
        record, metric = self.record, self.select_metric
        best = best_member(metrics[metric])
        ranking = (
            ""
            if self.rank_metric == metric
            else f", ranked by {self.rank_metric} (member {best_ranked(metrics, self.rank_metric)} first)"
        )
        stopping = f"; stopping ({STOP_REASONS[record.stop_reason]})" if record.finished else ""
        self.log(
            f"generation {record.generation - 1}: {seconds:.1f} s, best {metric} {metrics[metric][best]:.5f} "
            f"(member {best}){ranking}, {len(exploits)} exploits{stopping}"
        )
