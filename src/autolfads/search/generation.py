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

from ..names import HEADLINE_METRICS, METRIC, PBT_METRICS
from ..train.records import RunLog
from .pbt import Exploit, best_member, plan_exploits, should_stop
from .progress import SearchProgress
from .results import SearchRecord, SearchSettings, write_tables
from .space import SearchSpace

# Last-epoch metrics copied into state.csv (those a backend reports).
STATE_METRICS = (METRIC, *HEADLINE_METRICS, "lr", *(name for name in PBT_METRICS if name != METRIC))


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
    ):
        """record: a new one, or the one of a resumed search (its rng_state continues the random stream)."""
        self.workdir, self.settings, self.space, self.record, self.log, self.progress = (
            workdir,
            settings,
            space,
            record,
            log,
            progress,
        )
        self.rng = np.random.default_rng(settings.seed)
        if record.rng_state:
            self.rng.bit_generator.state = record.rng_state
        self._clock = time.perf_counter()  # wall time since the last end of a generation (or the start)

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
        record, settings = self.record, self.settings
        record.add_generation(epoch, hparams, metrics)
        record.finished = should_stop(record.best_by_generation, settings.max_generations)
        exploits = (
            []
            if record.finished
            else plan_exploits(
                record.generation, ranked(metrics[settings.metric], settings.metric), hparams, self.space, self.rng
            )
        )
        apply_exploits(exploits)
        record.add_exploits(exploits)
        record.generation += 1
        record.rng_state = self.rng.bit_generator.state
        now = time.perf_counter()
        seconds, self._clock = now - self._clock, now
        record.wall_time_s += seconds
        checkpoint()
        write_tables(self.workdir, record, metric_rows())
        best = best_member(metrics[METRIC])
        ranking = (
            ""
            if settings.metric == METRIC
            else f", ranked by {settings.metric} (member {best_ranked(metrics, settings.metric)} first)"
        )
        self.log(
            f"generation {record.generation - 1}: {seconds:.1f} s, best {METRIC} {metrics[METRIC][best]:.5f} "
            f"(member {best}){ranking}, {len(exploits)} exploits{'; stopping' if record.finished else ''}"
        )
        for member, value in enumerate(metrics[METRIC]):
            self.progress.member_done(member, value)
        self.progress.generation_done(record.finished)
        return exploits
