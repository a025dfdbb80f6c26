"""The Ray backend's scheduler: synchronous PBT (pbt.plan_exploits) as a Ray Tune TrialScheduler.

Its state (ray/pbt_state.json, `ray_records`) is the single source of truth of a Ray search, so a killed
search resumes where it stopped; the design is in docs/architecture.md ("The Ray backend").
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..layout import MEMBER_CKPT, RAY_DIR
from ..names import LEGACY_SELECT_METRIC
from .generation import SearchDriver, state_metrics
from .pbt import Exploit
from .progress import SearchProgress
from .ray_records import REPORT_KEYS, RayRecords, read_state, write_state
from .ray_trainable import DECISIONS, trial_group, trial_groups
from .ray_tune_private import (
    continue_waiting,
    pause_requeued,
    reset_failures,
    set_latest_checkpoint,
    skip_used_checkpoint_names,
)
from .results import SearchRecord, SearchSettings, search_log
from .space import SearchSpace

MAX_FAILURES = 3  # restarts of one trial from its last checkpoint before the search gives up (rerun resumes)
_restoring_workdir: Path | None = None  # set by restoring_in while Tune unpickles the scheduler

try:  # the module imports without Ray, so that run_ray can say how to install it
    from ray.tune.schedulers import FIFOScheduler as _SchedulerBase
except ImportError:  # pragma: no cover - exercised only without Ray
    _SchedulerBase = object


@contextlib.contextmanager
def restoring_in(workdir: Path):
    """While Tune restores an experiment, the scheduler it unpickles from tuner.pkl reads this workdir (even if
    it moved)."""
    global _restoring_workdir
    _restoring_workdir = workdir
    try:
        yield
    finally:
        _restoring_workdir = None


class SynchronousPBT(_SchedulerBase):
    """Synchronous PBT as a Ray Tune TrialScheduler (docs/architecture.md ("The Ray backend")).

    A trial trains a group of members (members_per_trial, default 1); the state, the reports and the decisions
    are per member. Overrides of FIFOScheduler: on_trial_add (a new, restored or restarted trial gets its
    members' hyperparameters and starting states from the scheduler's state), on_trial_result (record the
    report of each of its members; NOOP: wait at the barrier in the process, or PAUSE), on_trial_error,
    choose_trial_to_run (the generation's decision once everyone is at the barrier; then the waiting trials go
    on and the paused ones are started), debug_string. Ray's
    PopulationBasedTraining is not used: its quantile truncation, perturbation and sync bookkeeping are not
    AutoLFADS'.
    """

    _supports_buffered_results = False  # one report per generation, each answered before the next

    def __init__(
        self,
        workdir: Path,
        space: SearchSpace,
        settings: SearchSettings,
        base_hparams: dict[str, float],
        select_metric: str,
        members_per_trial: int = 1,
    ):
        """base_hparams: every per-member hyperparameter's config value (the searched ones are sampled over it).
        select_metric: train.select_metric. members_per_trial: k members per trial (contiguous groups: 0..k-1,
        k..2k-1, ...; the last may be smaller)."""
        super().__init__()
        self.workdir, self.space, self.settings, self.base_hparams = Path(workdir), space, settings, dict(base_hparams)
        self.select_metric = self._metric = select_metric
        self.members_per_trial = int(members_per_trial)
        self._load()

    # ---- pickling: Tune keeps the scheduler in tuner.pkl; the state on disk is what counts
    def __getstate__(self) -> dict:
        return {
            "workdir": str(self.workdir),
            "space": self.space,
            "settings": self.settings,
            "base_hparams": self.base_hparams,
            "members_per_trial": self.members_per_trial,
            "select_metric": self.select_metric,
        }

    def __setstate__(self, state: dict) -> None:
        self.workdir = Path(_restoring_workdir or state["workdir"])
        self.space, self.settings, self.base_hparams = state["space"], state["settings"], state["base_hparams"]
        self.members_per_trial = int(state.get("members_per_trial", 1))
        # a scheduler pickled before train.select_metric existed selected by the held-in score
        self.select_metric = self._metric = state.get("select_metric", LEGACY_SELECT_METRIC)
        self._load()

    # ---- state
    @property
    def folder(self) -> Path:
        return self.workdir / RAY_DIR

    @property
    def finished(self) -> bool:
        return self.record.finished

    def _load(self) -> None:
        self.population = self.settings.population
        self.groups = trial_groups(self.population, self.members_per_trial)
        self.group_of = {m: g for g, members in enumerate(self.groups) for m in members}
        self.log = search_log(self.workdir)
        self._trials: dict[int, Any] = {}
        self._trials_logged = False
        self._stopping = False
        self._requeued: set[str] = set()
        self._waiting: set[int] = set()  # groups whose report was answered NOOP: waiting in their process
        self._fit_checked = (-math.inf, False)  # (when, whether every trial fits on the cluster at once)
        self.records = RayRecords(self.workdir, self.log)
        state = read_state(self.workdir, self.population, self.members_per_trial)
        if state is not None:
            self.record = SearchRecord.from_dict(state["record"])
            self._start_driver()
            self.hparams, self.start, self.own = state["hparams"], state["start"], state["own"]
            self.source = state.get("source") or list(range(self.population))
            self.reports = {int(m): report for m, report in state["reports"].items()}
            self.final = {int(m): report for m, report in (state["final"] or {}).items()}
            self.final_hparams = state["final_hparams"]
            self._resumed = True
        else:
            self.record = SearchRecord()
            self._start_driver()
            # Full per-member values, as the embedded Trainer holds them (state.csv and exploits.csv show all).
            self.hparams = [
                {**self.base_hparams, **values} for values in self.space.sample_initial(self.population, self.rng)
            ]
            self.start, self.own = [None] * self.population, [None] * self.population
            self.source = list(range(self.population))
            self.reports, self.final, self.final_hparams = {}, {}, None
            self._resumed = False
            self._save()
        self.rows = self.records.rows()

    def _start_driver(self) -> None:
        progress = SearchProgress(
            self.population, self.settings.max_generations, self.select_metric, self.record.generation, self.log
        )
        self.driver = SearchDriver(
            self.workdir, self.settings, self.space, self.record, self.log, progress, self.select_metric
        )
        self.rng = self.driver.rng  # the initial sample, then the selections and perturbations

    def _save(self) -> None:
        state = {
            "population": self.population,
            "members_per_trial": self.members_per_trial,
            "record": {**self.record.to_dict(), "rng_state": self.rng.bit_generator.state},  # mid-generation too
            "hparams": self.hparams,
            "start": self.start,
            "own": self.own,
            "source": self.source,
            "reports": {str(m): report for m, report in self.reports.items()},
            "final": {str(m): report for m, report in self.final.items()} or None,
            "final_hparams": self.final_hparams,
        }
        write_state(self.workdir, state)

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.workdir)

    # ---- Tune hooks
    def set_search_properties(self, metric, mode, **spec) -> bool:
        if mode not in (None, "min"):
            return False
        self._metric = metric or self.select_metric
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        """A new, restored or restarted trial: its members' hyperparameters and starting states from our state;
        a group that already reported the generation in progress waits at the barrier, paused."""
        from ray.tune.experiment import Trial

        group = trial_group(trial)
        members = self.groups[group]
        self._trials[group] = trial
        self._waiting.discard(group)
        skip_used_checkpoint_names(trial)
        requeued = trial.trial_id in self._requeued
        self._requeued.discard(trial.trial_id)
        if self.finished:
            return
        if not requeued:  # new, or restored by a rerun: MAX_FAILURES restarts from here on
            reset_failures(trial)
        self._keep_registered_reports(trial, members)
        if all(m in self.reports for m in members):  # done with this generation: wait at the barrier, paused
            report = self.reports[members[0]]
            set_latest_checkpoint(trial, self.workdir / report["checkpoint"], report["metrics"])
            if trial.status == Trial.PENDING:
                if requeued:
                    pause_requeued(tune_controller, trial)
                else:  # added by a restore: the controller files it by the status set here
                    trial.set_status(Trial.PAUSED)
        else:
            for member in members:  # a group reports all its members at once: nothing of it is kept otherwise
                self.reports.pop(member, None)
                for path in (self.start[member], self.own[member]):
                    if path is not None and not (self.workdir / path / MEMBER_CKPT).is_file():
                        raise CheckpointError(
                            f"member {member} should continue from {self.workdir / path}, which is gone; "
                            "the search cannot resume"
                        )
            set_latest_checkpoint(
                trial, self._group_checkpoint(group), {"group": group, "generation": self.record.generation - 1}
            )
        trial.set_config(self._trial_config(group))
        if not self._trials_logged and len(self._trials) == len(self.groups):
            self._trials_logged = True
            self._log_start(trial)

    def _keep_registered_reports(self, trial, members: tuple[int, ...]) -> None:
        """Reports whose checkpoint was not seen registered: keep one if Tune's latest is that very report."""
        if not any(m in self.reports and self.reports[m]["checkpoint"] is None for m in members):
            return
        latest = trial.latest_checkpoint_result
        for member in members:
            report = self.reports.get(member)
            if report is None or report["checkpoint"] is not None:
                continue
            if _is_report(latest, report):
                report["checkpoint"] = self._rel(latest.checkpoint.path)
                self._members_row(member, report)
            else:
                del self.reports[member]
        self._save()

    def _log_start(self, trial) -> None:
        turns = (
            "every trial has a place on the cluster at once: each waits for the generation's decision in its process"
            if self._all_fit(trial)
            else "the trials do not all fit on the cluster at once: they take turns, some in a fresh process "
            "each generation"
        )
        self.log(f"{len(self.groups)} trials of {_resources(trial)} each; {turns}")
        if self._resumed:
            self.log(
                f"resumed the search in {self.workdir} at generation {self.record.generation} "
                f"({len(self._done())} members had finished it)"
            )
            return
        packing = (
            f", {self.members_per_trial} members per trial ({len(self.groups)} trials)"
            if self.members_per_trial > 1
            else ""
        )
        self.log(
            f"new Ray search: population {self.population}{packing}, {self.settings.epochs_per_generation} epochs "
            "per generation (the first adds the KL/L2 ramps)"
        )

    def _group_checkpoint(self, group: int) -> Path | None:
        """The checkpoint the group's trial reported last (Tune's restore point for the trial), None before the
        first."""
        first = self.groups[group][0]
        path = self.own[first] or self.start[first]  # an exploited member's own state, else its start is its group's
        return None if path is None else self.workdir / path

    def _trial_config(self, group: int) -> dict:
        members = self.groups[group]
        return {
            "group": group,
            "members": list(members),
            "generation": self.record.generation,
            "hparams": [dict(self.hparams[m]) for m in members],
            "start": [self.start[m] for m in members],  # the checkpoint each member starts from ...
            "source": [self.source[m] for m in members],  # ... and whose state in it (the winner's after an exploit)
            "own": [self.own[m] for m in members],  # after an exploit: its own last checkpoint (rng, history)
        }

    def on_trial_error(self, tune_controller, trial) -> None:
        self._requeued.add(trial.trial_id)  # Tune calls on_trial_add next if it restarts the trial

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        group, generation = int(result["group"]), int(result["generation"])
        if self.finished or generation != self.record.generation or group != trial_group(trial):
            self.log(
                f"ignored a report of trial {group} for generation {generation} "
                f"(expected generation {self.record.generation})"
            )
            return self.PAUSE
        rows = json.loads(result["rows"])
        shared = {key: result[key] for key in REPORT_KEYS if key in result}
        for values in json.loads(result["members"]):
            member = int(values["member"])
            metrics = {name: value for name, value in values.items() if name not in REPORT_KEYS}
            metrics.update({key: values.get(key, shared.get(key)) for key in REPORT_KEYS})
            self.reports[member] = {"report_id": result["report_id"], "metrics": metrics, "checkpoint": None}
            mine = [row for row in rows if int(row["member"]) == member]
            self.records.add_report(member, generation, trial.trial_id, metrics, mine)
            self.rows[(member, generation)] = mine
        reset_failures(trial)  # MAX_FAILURES restarts per generation, not per search
        self._save()
        for member in self.groups[group]:
            self.driver.progress.member_done(member, float(self.reports[member]["metrics"][self.select_metric]))
        # The barrier. NOOP: the trial waits in its process, inside its report, until the decision (Tune still
        # registers the reported checkpoint); PAUSE: Tune stops the actor, whose resources a trial still to run
        # this generation needs.
        if not self._may_wait(trial, group):
            return self.PAUSE
        self._waiting.add(group)
        return self.NOOP

    def _may_wait(self, trial, group: int) -> bool:
        """A trial may hold its resources at the barrier: every trial fits on the cluster at once, or every other
        trial that has yet to report the generation is running (none waits for resources)."""
        from ray.tune.experiment import Trial

        return self._all_fit(trial) or (
            len(self._trials) == len(self.groups)
            and all(t.status == Trial.RUNNING or self._reported(g) for g, t in self._trials.items() if g != group)
        )

    def _all_fit(self, trial) -> bool:
        """Every trial of the search has a place on the cluster's live nodes at once (checked once a second)."""
        import ray

        now = time.monotonic()
        if now - self._fit_checked[0] > 1.0:
            need = trial.placement_group_factory.required_resources
            self._fit_checked = (now, trials_fit(ray.nodes(), need, len(self.groups)))
        return self._fit_checked[1]

    def _reported(self, group: int) -> bool:
        return all(m in self.reports for m in self.groups[group])

    def choose_trial_to_run(self, tune_controller):
        from ray.tune.experiment import Trial

        self._collect_checkpoints()
        trials = [self._trials.get(g) for g in range(len(self.groups))]
        if None in trials:  # Tune is still adding them
            return None
        failed = [m for g, trial in enumerate(trials) if trial.status == Trial.ERROR for m in self.groups[g]]
        done = set(self._done())
        waiting = [  # at the barrier in its process, its checkpoint registered (pausing it now loses nothing)
            g for g in sorted(self._waiting) if trials[g].status == Trial.RUNNING and set(self.groups[g]) <= done
        ]
        if self.finished or failed:
            if failed and not self._stopping:
                self.log(
                    f"member(s) {failed} failed more than {MAX_FAILURES} times in a generation; stopping the search "
                    "(rerun to resume)"
                )
            self._stopping = True
            for group, trial in enumerate(trials):  # one still training reports its generation (kept), then stops
                if trial.status in (Trial.PENDING, Trial.PAUSED) or group in waiting:
                    tune_controller.stop_trial(trial)
            return None
        if waiting and self._needed_elsewhere(trials, waiting):
            for group in waiting:  # a restarted trial needs resources: the waiting ones free theirs
                self._waiting.discard(group)
                tune_controller.pause_trial(trials[group], should_checkpoint=False)
            waiting = []
        if len(done) == self.population and all(t.status == Trial.PAUSED or g in waiting for g, t in enumerate(trials)):
            self._decide()  # everyone is at the barrier: paused, or waiting in its process
            if self.finished:
                for trial in trials:
                    tune_controller.stop_trial(trial)
                return None
            self._start_next_generation(tune_controller, trials, waiting)
        for group, trial in enumerate(trials):
            if trial.status == Trial.PAUSED and self.groups[group][0] not in self.reports:
                return trial  # the next generation, one trial per call (Tune asks every step)
        return None

    def _needed_elsewhere(self, trials: list, waiting: list[int]) -> bool:
        """A trial still to run the generation is not running, and the trials do not all fit at once: the
        resources of the trials waiting in their process may be what it waits for."""
        from ray.tune.experiment import Trial

        stalled = any(t.status != Trial.RUNNING and not self._reported(g) for g, t in enumerate(trials))
        return stalled and not self._all_fit(trials[waiting[0]])

    def _start_next_generation(self, tune_controller, trials: list, waiting: list[int]) -> None:
        """After the decision: every trial's configuration and restore point (losers now point at their
        winner's checkpoint); the waiting trials read theirs from the DecisionBoard and go on, the paused ones
        are started by choose_trial_to_run."""
        import ray

        configs = {group: self._trial_config(group) for group in range(len(self.groups))}
        for group, trial in enumerate(trials):
            set_latest_checkpoint(
                trial, self._group_checkpoint(group), {"group": group, "generation": self.record.generation - 1}
            )
            trial.set_config(configs[group])
        ray.get(ray.get_actor(DECISIONS).post.remote(self.record.generation, configs))  # before any goes on
        for group in waiting:
            self._waiting.discard(group)
            continue_waiting(tune_controller, trials[group])

    def debug_string(self) -> str:
        done = f"{len(self._done())}/{self.population}"
        return f"SynchronousPBT: generation {self.record.generation}, {done} members reported"

    # ---- the decision
    def _done(self) -> list[int]:
        return [m for m, report in self.reports.items() if report["checkpoint"] is not None]

    def _collect_checkpoints(self) -> None:
        """A reported checkpoint is registered by Tune after on_trial_result: note where it was persisted."""
        changed = False
        for member, report in self.reports.items():
            trial = self._trials.get(self.group_of[member])
            if report["checkpoint"] is not None or trial is None:
                continue
            if _is_report(trial.latest_checkpoint_result, report):
                report["checkpoint"] = self._rel(trial.latest_checkpoint_result.checkpoint.path)
                self._members_row(member, report)
                changed = True
        if changed:
            self._save()

    def _decide(self) -> None:
        """The end of a generation (generation.SearchDriver, as every backend): losers will restore their
        winner's state, then take the new hyperparameters; the decision is durable before any trial acts on it."""
        record = self.record
        reports = [self.reports[m] for m in range(self.population)]
        hparams = [dict(h) for h in self.hparams]
        checkpoints = [r["checkpoint"] for r in reports]

        def apply(exploits: list[Exploit]) -> None:
            self.start, self.own, self.source = (
                list(checkpoints),
                [None] * self.population,
                list(range(self.population)),
            )
            for exploit in exploits:
                self.start[exploit.loser] = checkpoints[exploit.winner]
                self.source[exploit.loser] = exploit.winner
                self.own[exploit.loser] = checkpoints[exploit.loser]
                self.hparams[exploit.loser] = dict(exploit.new)

        def checkpoint() -> None:
            if record.finished:
                self.final = dict(enumerate(reports))
                self.final_hparams = hparams
            self.reports = {}
            self._save()

        def completed_rows() -> list[dict]:
            return sorted(
                (row for (m, g), rows in self.rows.items() if g < record.generation for row in rows),
                key=lambda row: (row["epoch"], row["member"]),
            )

        epoch = max(int(r["metrics"]["epoch"]) for r in reports)
        self.driver.end_generation(
            epoch, hparams, state_metrics([r["metrics"] for r in reports]), apply, checkpoint, completed_rows
        )
        if record.finished:
            self.driver.progress.close()
            self.records.close()

    def _members_row(self, member: int, report: dict) -> None:
        trial = self._trials.get(self.group_of[member])
        self.records.add_checkpoint(trial.trial_id if trial else "", report)


def _resources(trial) -> str:
    need = trial.placement_group_factory.required_resources
    return ", ".join(f"{amount:g} {name}" for name, amount in need.items() if amount > 0) or "no resources"


def trials_fit(nodes: list[dict], need: dict[str, float], trials: int) -> bool:
    """Whether `trials` trials, each needing `need` resources on one node, have a place at once on the live
    nodes of `ray.nodes()`."""
    places = 0.0
    for node in nodes:
        if node.get("Alive"):
            have = node.get("Resources", {})
            # Ray counts resources in units of 1e-4: 0.6 CPUs hold three trials of 0.2
            fits = (math.floor(have.get(name, 0.0) / amount + 1e-6) for name, amount in need.items() if amount > 0)
            places += min(fits, default=math.inf)
    return places >= trials


def _is_report(latest, report: dict) -> bool:
    """Tune's latest registered checkpoint result is the one of this report."""
    return (
        latest is not None and latest.checkpoint is not None and latest.metrics.get("report_id") == report["report_id"]
    )
