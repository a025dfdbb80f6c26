"""Live progress of a search: a tqdm bar on a terminal, otherwise a plain line at most every 30 seconds.

The unit is a member-generation (one member finishing one generation), so the embedded backend (every
member at once) and the Ray backend (members one by one) show the same thing: generation g/max, members
done in it, the best selection metric (train.select_metric) of the population now (of the members that finished
the current generation, until the first does: of the last completed generation; the closing summary names the
last generation's best, so the two agree), and an ETA. The ETA assumes all `max_generations` (or the generations
a time budget holds) run; the stopping rule usually ends the search earlier, so it is an upper bound.
"""

import math
import sys
import time
from collections.abc import Callable


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class SearchProgress:
    def __init__(
        self,
        population: int,
        max_generations: int | None,
        metric: str,
        generation: int = 0,
        log: Callable[[str], None] = _stderr,
        interval_s: float = 30.0,
    ):
        """max_generations: None when only a time budget bounds the search (plan() sets the count once known).
        metric: the selection metric shown. generation: generations already completed (a resumed search starts
        there)."""
        self.population, self.max_generations, self.log, self.interval_s = population, max_generations, log, interval_s
        self.metric = metric
        self.generation, self.first_generation = generation, generation
        self.members_done: set[int] = set()
        self.finished = False
        self.best = math.nan  # the best of the current generation's reports, else of the last completed generation
        self.generation_best = math.nan
        self.epochs = ""  # "epoch 3/25" within the generation, when the backend knows it
        self.began = self.last_line = time.monotonic()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            total = population * max_generations if max_generations is not None else None
            self.bar = tqdm(
                initial=population * generation, total=total, unit="member-gen", file=sys.stderr, dynamic_ncols=True
            )
            self._refresh()

    def plan(self, generations: int) -> None:
        """The generations the search is expected to run (a time budget's estimate)."""
        self.max_generations = generations
        if self.bar is not None:
            self.bar.total = self.population * generations
            self.bar.refresh()

    def epoch(self, done: int, total: int) -> None:
        """Epochs done of the current generation (the embedded backend trains every member together)."""
        self.epochs = f"epoch {done}/{total}"
        self._refresh()

    def member_done(self, member: int, metric: float) -> None:
        """One member finished the current generation with this value of the selection metric."""
        if member in self.members_done:
            return
        self.members_done.add(member)
        if math.isfinite(metric) and (math.isnan(self.generation_best) or metric < self.generation_best):
            self.generation_best = self.best = metric
        if self.bar is not None:
            self.bar.update(1)
        self._refresh()

    def generation_done(self, finished: bool = False) -> None:
        """Every member has reported; finished: the search stops after this generation."""
        self.generation += 1
        self.finished = finished
        self.members_done.clear()
        self.generation_best = math.nan
        self.epochs = ""
        self._refresh(force=finished)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def summary(self) -> str:
        if self.finished:
            parts = [f"done after {self.generation} generations"]
        else:
            parts = [
                f"generation {self.generation + 1}/{self.max_generations or '?'}",
                f"members {len(self.members_done)}/{self.population}",
            ]
        if self.epochs:
            parts.append(self.epochs)
        parts.append(f"best {self.metric} " + ("—" if math.isnan(self.best) else f"{self.best:.5f}"))
        return " | ".join(parts)

    def eta_s(self) -> float:
        """Seconds left if every remaining generation takes as long as this session's have on average."""
        if self.max_generations is None:
            return math.nan
        done = (self.generation - self.first_generation) * self.population + len(self.members_done)
        left = (self.max_generations - self.generation) * self.population - len(self.members_done)
        return (time.monotonic() - self.began) / done * left if done else math.nan

    def _refresh(self, force: bool = False) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self.summary())
            return
        now = time.monotonic()
        if force or now - self.last_line >= self.interval_s:
            eta_s = self.eta_s()
            eta = "" if self.finished or math.isnan(eta_s) else f" | eta <= {eta_s / 60:.1f} min"
            self.log(f"search: {self.summary()} | elapsed {(now - self.began) / 60:.1f} min{eta}")
            self.last_line = now
