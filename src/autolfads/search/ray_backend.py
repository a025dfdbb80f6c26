"""The Ray backend: one Ray Tune trial per member, on one machine or a cluster.

Every trial trains ONE member (a one-member Trainer) a generation at a time and reports once per
generation with a checkpoint. `BinaryTournamentPBT`, a Ray Tune TrialScheduler, ends every generation
with the embedded backend's code (`generation.SearchDriver`: `pbt.plan_exploits`, `pbt.should_stop`, the
tables, the log line and the progress display; ranked by --metric, NLB metrics included) and the same
random stream (numpy default_rng(settings.seed): the initial sample, then the tournaments and perturbations):

* synchronous generations: each report is answered PAUSE (Tune saves the reported checkpoint and stops the
  trial's actor); a paused trial is only started again (`choose_trial_to_run`) after the generation's
  decision, and the decision is made only when every member has reported the generation and is paused;
* binary tournament in disjoint random pairs; the loser continues from the WINNER's checkpoint (weights,
  Adam moments and training state; it keeps its own random stream and history, as in the embedded backend)
  with the winner's hyperparameters perturbed, applied in the trial after the restore;
* the stop rule of `pbt.should_stop`; then every trial is stopped.

The scheduler's state (the SearchRecord, the random stream, every member's next checkpoint and
hyperparameters, the reports of the generation in progress) is written atomically to ray/pbt_state.json
after every report and decision. It is the single source of truth: when a killed search is rerun, Tune's
experiment is restored (`Tuner.restore`) and the scheduler rewrites each restored trial's configuration and
checkpoint from its own state, so completed generations and members that already reported the generation in
progress are not trained again. A failed trial (a killed worker or node) is restarted by Tune from its last
checkpoint (FailureConfig.max_failures).

Files (besides the common results layout of results.py):
    ray/search/          the Ray Tune experiment (one folder per trial, with its checkpoints)
    ray/pbt_state.json   the scheduler's state
    ray/reports.jsonl    every accepted report, appended (per-epoch rows for metrics.csv)
    ray/members.csv      one row per accepted report: node, trial, checksums of the restored and saved state
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any


from ..config import Config
from ..data import LFADSData
from ..errors import AutoLFADSError, CheckpointError, ConfigError
from ..train.checkpoint import load_checkpoint, save_checkpoint
from ..train.run import TensorBoard
from ..train.trainer import METRIC, Trainer, member_hparams
from .generation import SearchDriver, best_ranked, state_metrics
from .pbt import Exploit, generation_epochs
from .progress import SearchProgress
from .results import SearchOutcome, SearchRecord, SearchSettings, search_log, write_best_model
from .space import SearchSpace

RAY_DIR, EXPERIMENT = "ray", "search"
STATE_FILE, REPORTS_FILE, MEMBERS_FILE = "pbt_state.json", "reports.jsonl", "members.csv"
MEMBER_CKPT = "member.ckpt"
MAX_FAILURES = 3  # restarts of one trial from its last checkpoint before the search gives up (rerun resumes)
NUM_TO_KEEP = 4  # checkpoints kept per trial: a loser restores from its winner's latest, never deleted under it
STATE_VERSION = 1
_PAYLOAD_KEYS = ("model", "optimizer", "trainer", "rng", "history")
_restoring_workdir: Path | None = None  # set by the driver while Tune unpickles the scheduler
_REPORT_KEYS = ("epoch", "generation", "member", "node_id", "torch_threads", "restored_member", "restored_checksum", "saved_checksum", "report_id", "started_at")

try:  # the module imports without Ray, so that run_ray can say how to install it
    from ray.tune.schedulers import FIFOScheduler as _SchedulerBase
except ImportError:  # pragma: no cover - exercised only without Ray
    _SchedulerBase = object


class RayBackendError(AutoLFADSError):
    """The Ray search could not finish (a member failed repeatedly, or it was interrupted)."""


# ------------------------------------------------------------------------------------------------ the driver
def run_ray(
    config: Config,
    data: list[LFADSData],
    space: SearchSpace,
    settings: SearchSettings,
    workdir: Path,
    address: str | None = None,
    cpus_per_member: float = 1.0,
    gpus_per_member: float = 0.0,
) -> SearchOutcome:
    """Run (or resume) the search as one Ray Tune trial per member.
    address: None starts a local Ray instance (dashboard off); "auto" or HOST:PORT joins a running cluster."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ConfigError("the Ray backend needs Ray: pip install 'autolfads[ray]' (or use --backend embedded)") from None
    if cpus_per_member <= 0 or gpus_per_member < 0:
        raise ConfigError(f"cpus_per_member must be > 0 and gpus_per_member >= 0, got {cpus_per_member} and {gpus_per_member}")
    workdir = Path(workdir).resolve()
    log = search_log(workdir)
    base = member_hparams(config)
    scheduler = BinaryTournamentPBT(workdir, space, settings, base)
    if scheduler.finished:
        log(f"the search in {workdir} is complete; writing the best model again")
    else:
        started_ray = False
        if not ray.is_initialized():
            quiet = {"logging_level": logging.WARNING, "logging_config": ray.LoggingConfig(log_level="WARNING")}
            if address is None:  # "local": never attach to a cluster found in the environment by accident
                ray.init(address="local", include_dashboard=False, **quiet)
            else:
                try:
                    _check_reachable(address)
                    ray.init(address=address, **quiet)
                except (ConnectionError, ValueError) as err:
                    raise ConfigError(
                        f"cannot join the Ray cluster at {address!r}: {err}. Start one (`ray start --head`, `ray up deploy/ray/...`), "
                        "set RAY_AUTH_MODE=token if the cluster uses token authentication, or leave out the address for a local Ray instance"
                    ) from None
            started_ray = True
            _check_local_resources(ray, cpus_per_member, gpus_per_member)
        try:
            _fit(tune, config, data, settings, workdir, scheduler, cpus_per_member, gpus_per_member, log)
        finally:
            if started_ray:
                ray.shutdown()
        scheduler = BinaryTournamentPBT(workdir, space, settings, base)  # the state on disk is the truth
        if not scheduler.finished:
            raise RayBackendError(
                f"the search stopped after {scheduler.record.generation} generations: a member failed more than {MAX_FAILURES} times "
                f"or the run was interrupted (see {workdir / RAY_DIR / EXPERIMENT} and search.log); rerun the same command to resume"
            )
    final = scheduler.final
    metrics = state_metrics([final[m]["metrics"] for m in range(settings.population)])
    best = best_ranked(metrics, settings.metric)
    payload = load_checkpoint(workdir / final[best]["checkpoint"] / MEMBER_CKPT)
    member_state = {key: payload[key] for key in _PAYLOAD_KEYS}
    hparams = dict(scheduler.final_hparams[best])
    outputs = write_best_model(workdir, config, hparams, member_state, data, log)
    record = scheduler.record
    last = {name: value for name, value in final[best]["metrics"].items() if isinstance(value, float)}
    return SearchOutcome(workdir, record.generation, best, metrics[METRIC][best], hparams, outputs[0].parent, outputs, record.wall_time_s, best_metrics=last, ranked_by=settings.metric)


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Ray retries an unreachable HOST:PORT for minutes; say so at once instead ("auto" is Ray's to resolve)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("expected auto or HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConnectionError(f"nothing answers at {host}:{port} ({err})") from None


def _check_local_resources(ray, cpus: float, gpus: float) -> None:
    """On a machine of its own, a member that does not fit would wait forever (a cluster may still scale up)."""
    available = ray.cluster_resources()
    if cpus > available.get("CPU", 0) or gpus > available.get("GPU", 0):
        ray.shutdown()
        raise ConfigError(
            f"a member needs {cpus:g} CPUs and {gpus:g} GPUs, but this machine's Ray instance has {available.get('CPU', 0):g} CPUs "
            f"and {available.get('GPU', 0):g} GPUs; lower --cpus-per-member/--gpus-per-member or join a cluster with --address"
        )


def _fit(tune, config, data, settings, workdir, scheduler, cpus, gpus, log) -> None:
    trainable = tune.with_resources(
        tune.with_parameters(
            member_trainable,
            config_dict=config.to_dict(),
            data=data,
            workdir=str(workdir),
            epochs_per_generation=settings.epochs_per_generation,
            max_generations=settings.max_generations,
            nlb=settings.metric != METRIC,
            cpus=float(cpus),
            gpus=float(gpus),
        ),
        {"cpu": cpus, "gpu": gpus},
    )
    experiment = workdir / RAY_DIR / EXPERIMENT
    if tune.Tuner.can_restore(str(experiment)):
        log(f"restoring the Ray Tune experiment {experiment}")
        global _restoring_workdir
        _restoring_workdir = workdir  # the scheduler unpickled from tuner.pkl reads this workdir, even if it moved
        try:
            tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True, resume_errored=True, **_resume_everything())
        finally:
            _restoring_workdir = None
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"member": tune.grid_search(list(range(settings.population)))},
            tune_config=tune.TuneConfig(
                scheduler=scheduler,
                num_samples=1,
                metric=METRIC,
                mode="min",
                reuse_actors=False,  # a fresh process per generation: spreads over nodes, survives node loss
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                storage_path=str(workdir / RAY_DIR),
                name=EXPERIMENT,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=NUM_TO_KEEP),
                failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
                verbose=0,
            ),
        )
    tuner.fit()


def _resume_everything() -> dict:
    """The search is unfinished, so every member continues - also trials Tune saved as TERMINATED (stopped when
    another member failed for good) or ERROR. Tune's ResumeConfig is marked experimental: without it, Tune's
    defaults (unfinished and errored trials resume) apply."""
    try:
        from ray.tune.tune_config import ResumeConfig
    except ImportError:  # pragma: no cover - other Ray versions
        return {}
    resume = ResumeConfig.ResumeType.RESUME
    return {"_resume_config": ResumeConfig(finished=resume, unfinished=resume, errored=resume)}


def _trial_name(trial) -> str:
    return f"member_{int(trial.config['member']):03d}_{trial.trial_id}"


# ------------------------------------------------------------------------------------------------ the trial
def member_trainable(
    tune_config: dict,
    *,
    config_dict: dict,
    data: list[LFADSData],
    workdir: str,
    epochs_per_generation: int,
    max_generations: int,
    nlb: bool,
    cpus: float,
    gpus: float,
) -> None:
    """One member, generation by generation: restore (the winner's state after an exploit), THEN apply this
    trial's hyperparameters, train, report the generation's last epoch with a checkpoint."""
    import ray
    import torch
    from ray import tune

    started_at = time.time()
    torch.set_num_threads(max(1, int(cpus)))  # Ray does not: two threads per small model is 5-10x slower
    config = Config.model_validate(config_dict)
    if gpus == 0 and config.train.device == "auto":  # a member given no GPU must not take one
        config = Config.model_validate({**config_dict, "train": {**config_dict["train"], "device": "cpu"}})
    member, hparams, own = int(tune_config["member"]), dict(tune_config["hparams"]), tune_config.get("own")
    trainer = Trainer(config, data, population=[hparams], member_seeds=[config.train.seed + member])
    generation, restored_member, restored_checksum = 0, -1, ""
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            payload = load_checkpoint(Path(folder) / MEMBER_CKPT, map_location=trainer.device)
        generation, restored_member = int(payload["generations_done"]), int(payload["member"])
        if own is not None:  # exploited: the winner's weights and optimizer, the member's own random stream and history
            mine = load_checkpoint(Path(workdir) / own / MEMBER_CKPT, map_location=trainer.device)
            payload["rng"] = {**payload["rng"], "members": mine["rng"]["members"]}
            payload["history"] = mine["history"]
        trainer.load_state_dict(payload)
        restored_checksum = state_checksum(trainer)
    expected = int(tune_config.get("generation", generation))
    if generation != expected:
        raise CheckpointError(f"member {member} was given a checkpoint after {generation} generations, but generation {expected} is next")
    if own is not None:  # after the restore, so the copied state does not overwrite them
        trainer.set_member_hparams(0, hparams)
    else:
        changed = {name: value for name, value in hparams.items() if value != trainer.member_hparams(0)[name]}
        if changed:
            trainer.set_member_hparams(0, changed)
    node = ray.get_runtime_context().get_node_id()
    while generation < max_generations:
        first = len(trainer.history)
        epochs = generation_epochs(generation, epochs_per_generation, trainer.ramp_end_epoch)
        for done in range(1, epochs + 1):
            trainer.run_epoch(nlb=nlb and done == epochs)  # NLB metrics to rank by (search --metric)
        rows = trainer.history[first:]
        for row in rows:
            row["generation"] = generation
        saved_checksum = state_checksum(trainer)
        metrics = {name: value for name, value in rows[-1].items() if name not in ("epoch", "member", "generation")}
        metrics.update(
            epoch=trainer.epoch,
            generation=generation,
            member=member,
            node_id=node,
            torch_threads=torch.get_num_threads(),
            restored_member=restored_member,
            restored_checksum=restored_checksum,
            saved_checksum=saved_checksum,
            report_id=uuid.uuid4().hex,
            started_at=started_at,
            rows=json.dumps([{**row, "member": member} for row in rows]),
        )
        with tempfile.TemporaryDirectory(prefix="autolfads-member-") as folder:
            state = {**trainer.state_dict(), "config": config.to_dict(), "member": member, "generations_done": generation + 1}
            save_checkpoint(state, Path(folder) / MEMBER_CKPT)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        generation += 1
        restored_member, restored_checksum, started_at = member, saved_checksum, time.time()


def state_checksum(trainer: Trainer) -> str:
    """SHA-256 (16 hex digits) of the weights, Adam moments and step counts: equal exactly when the state is copied."""
    digest = hashlib.sha256()
    state = trainer.state_dict()
    optimizer = state["optimizer"]
    tensors = [*(state["model"][name] for name in sorted(state["model"])), optimizer["steps"], *optimizer["exp_avg"], *optimizer["exp_avg_sq"]]
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ the scheduler
class BinaryTournamentPBT(_SchedulerBase):
    """Synchronous binary-tournament PBT as a Ray Tune TrialScheduler (see the module docstring).

    Overrides of FIFOScheduler: on_trial_add (a new, restored or restarted trial gets its member's
    hyperparameters and checkpoint from the scheduler's state), on_trial_result (record the report, PAUSE),
    on_trial_error, choose_trial_to_run (the generation's decision once everyone is paused at the barrier; then
    the paused members of the next generation), debug_string. Ray's PopulationBasedTraining is not used: its
    quantile truncation, perturbation and sync bookkeeping are not AutoLFADS'.
    """

    _supports_buffered_results = False  # one report per generation, each answered before the next

    def __init__(self, workdir: Path, space: SearchSpace, settings: SearchSettings, base_hparams: dict[str, float]):
        """base_hparams: every per-member hyperparameter's config value (the searched ones are sampled over it)."""
        super().__init__()
        self.workdir, self.space, self.settings, self.base_hparams = Path(workdir), space, settings, dict(base_hparams)
        self._metric = METRIC
        self._load()

    # ---- pickling: Tune keeps the scheduler in tuner.pkl; the state on disk is what counts
    def __getstate__(self) -> dict:
        return {"workdir": str(self.workdir), "space": self.space, "settings": self.settings, "base_hparams": self.base_hparams}

    def __setstate__(self, state: dict) -> None:
        self.workdir, self.space, self.settings = Path(_restoring_workdir or state["workdir"]), state["space"], state["settings"]
        self.base_hparams = state["base_hparams"]
        self._metric = METRIC
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
        self.log = search_log(self.workdir)
        self._trials: dict[int, Any] = {}
        self._trials_logged = False
        self._stopping = False
        self._requeued: set[str] = set()
        self._boards: dict[int, TensorBoard] = {}
        path = self.folder / STATE_FILE
        if path.exists():
            state = json.loads(path.read_text())
            if state.get("version") != STATE_VERSION or state.get("population") != self.population:
                raise CheckpointError(f"{path} belongs to a different search; use a new workdir")
            self.record = SearchRecord.from_dict(state["record"])
            self._start_driver()
            self.hparams, self.start, self.own = state["hparams"], state["start"], state["own"]
            self.reports = {int(m): report for m, report in state["reports"].items()}
            self.final = {int(m): report for m, report in (state["final"] or {}).items()}
            self.final_hparams = state["final_hparams"]
            self._resumed = True
        else:
            self.record = SearchRecord()
            self._start_driver()
            # Full per-member values, as the embedded Trainer holds them (state.csv and exploits.csv show all).
            self.hparams = [{**self.base_hparams, **values} for values in self.space.sample_initial(self.population, self.rng)]
            self.start, self.own = [None] * self.population, [None] * self.population
            self.reports, self.final, self.final_hparams = {}, {}, None
            self._resumed = False
            self._save()
        self.rows = _read_reports(self.folder / REPORTS_FILE)

    def _start_driver(self) -> None:
        progress = SearchProgress(self.population, self.settings.max_generations, self.record.generation, self.log)
        self.driver = SearchDriver(self.workdir, self.settings, self.space, self.record, self.log, progress)
        self.rng = self.driver.rng  # the initial sample, then the tournaments and perturbations

    def _save(self) -> None:
        state = {
            "version": STATE_VERSION,
            "population": self.population,
            "record": {**self.record.to_dict(), "rng_state": self.rng.bit_generator.state},  # mid-generation too
            "hparams": self.hparams,
            "start": self.start,
            "own": self.own,
            "reports": {str(m): report for m, report in self.reports.items()},
            "final": {str(m): report for m, report in self.final.items()} or None,
            "final_hparams": self.final_hparams,
        }
        _write_json(self.folder / STATE_FILE, state)

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.workdir)

    # ---- Tune hooks
    def set_search_properties(self, metric, mode, **spec) -> bool:
        if mode not in (None, "min"):
            return False
        self._metric = metric or METRIC
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        from ray.tune.experiment import Trial

        member = int(trial.config["member"])
        self._trials[member] = trial
        _skip_used_checkpoint_names(trial)
        requeued = trial.trial_id in self._requeued
        self._requeued.discard(trial.trial_id)
        if self.finished:
            return
        if not requeued:  # new, or restored by a rerun: MAX_FAILURES restarts from here on
            _reset_failures(trial)
        report = self.reports.get(member)
        if report is not None and report["checkpoint"] is None:
            # Reported, but the checkpoint was not seen registered: take Tune's if it is that very report.
            latest = trial.latest_checkpoint_result
            if latest is not None and latest.checkpoint is not None and latest.metrics.get("report_id") == report["report_id"]:
                report["checkpoint"] = self._rel(latest.checkpoint.path)
                self._members_row(member, report)
            else:
                del self.reports[member]
            self._save()
        report = self.reports.get(member)
        if report is not None:  # done with this generation: wait at the barrier, paused
            _set_latest_checkpoint(trial, self.workdir / report["checkpoint"], report["metrics"])
            if trial.status == Trial.PENDING:
                if requeued:
                    tune_controller._set_trial_status(trial, Trial.PAUSED)
                else:  # added by a restore: the controller files it by the status set here
                    trial.set_status(Trial.PAUSED)
        else:
            start = self.start[member]
            if start is not None and not (self.workdir / start / MEMBER_CKPT).is_file():
                raise CheckpointError(f"member {member} should continue from {self.workdir / start}, which is gone; the search cannot resume")
            _set_latest_checkpoint(trial, None if start is None else self.workdir / start, {"member": member, "generation": self.record.generation - 1})
        trial.set_config(self._trial_config(member))
        if not self._trials_logged and len(self._trials) == self.population:
            self._trials_logged = True
            if self._resumed:
                self.log(f"resumed the search in {self.workdir} at generation {self.record.generation} ({len(self._done())} members had finished it)")
            else:
                self.log(f"new Ray search: population {self.population}, {self.settings.epochs_per_generation} epochs per generation (the first adds the KL/L2 ramps)")

    def _trial_config(self, member: int) -> dict:
        return {"member": member, "generation": self.record.generation, "hparams": dict(self.hparams[member]), "own": self.own[member]}

    def on_trial_error(self, tune_controller, trial) -> None:
        self._requeued.add(trial.trial_id)  # Tune calls on_trial_add next if it restarts the trial

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        member, generation = int(result["member"]), int(result["generation"])
        if self.finished or generation != self.record.generation or member != int(trial.config["member"]):
            self.log(f"ignored a report of member {member} for generation {generation} (expected generation {self.record.generation})")
            return self.PAUSE
        rows = json.loads(result["rows"])
        names = [name for name in rows[-1] if name not in _REPORT_KEYS] + list(_REPORT_KEYS)
        metrics = {name: result[name] for name in names if name in result}
        self.reports[member] = {"report_id": result["report_id"], "metrics": metrics, "checkpoint": None}
        _reset_failures(trial)  # MAX_FAILURES restarts per generation, not per search
        entry = {"generation": generation, "member": member, "trial_id": trial.trial_id, "time": time.time(), **{k: metrics[k] for k in ("report_id", "node_id", "started_at", "restored_member", "restored_checksum", "saved_checksum", METRIC)}}
        _append_jsonl(self.folder / REPORTS_FILE, {**entry, "rows": rows})
        self.rows[(member, generation)] = rows
        self._board(member, rows)
        self._save()
        self.driver.progress.member_done(member, float(metrics[METRIC]))
        return self.PAUSE  # Tune saves the reported checkpoint, then stops the actor: the barrier

    def choose_trial_to_run(self, tune_controller):
        from ray.tune.experiment import Trial

        self._collect_checkpoints()
        trials = [self._trials.get(m) for m in range(self.population)]
        if None in trials:  # Tune is still adding them
            return None
        failed = [m for m, trial in enumerate(trials) if trial.status == Trial.ERROR]
        if self.finished or failed:
            if failed and not self._stopping:
                self.log(f"member(s) {failed} failed more than {MAX_FAILURES} times in a generation; stopping the search (rerun to resume)")
            self._stopping = True
            for trial in trials:  # a running member still reports its generation (kept for the rerun), then stops
                if trial.status in (Trial.PENDING, Trial.PAUSED):
                    tune_controller.stop_trial(trial)
            return None
        if len(self._done()) == self.population and all(trial.status == Trial.PAUSED for trial in trials):
            self._decide()  # everyone is at the barrier
            if self.finished:
                for trial in trials:
                    tune_controller.stop_trial(trial)
                return None
            for member, trial in enumerate(trials):  # losers now point at their winner's checkpoint
                _set_latest_checkpoint(trial, self.workdir / self.start[member], {"member": member, "generation": self.record.generation - 1})
                trial.set_config(self._trial_config(member))
        for member, trial in enumerate(trials):
            if trial.status == Trial.PAUSED and member not in self.reports:
                return trial  # the next generation, one trial per call (Tune asks every step)
        return None

    def debug_string(self) -> str:
        return f"BinaryTournamentPBT: generation {self.record.generation}, {len(self._done())}/{self.population} members reported"

    # ---- the decision
    def _done(self) -> list[int]:
        return [m for m, report in self.reports.items() if report["checkpoint"] is not None]

    def _collect_checkpoints(self) -> None:
        """A reported checkpoint is registered by Tune after on_trial_result: note where it was persisted."""
        changed = False
        for member, report in self.reports.items():
            trial = self._trials.get(member)
            if report["checkpoint"] is not None or trial is None:
                continue
            latest = trial.latest_checkpoint_result
            if latest is not None and latest.checkpoint is not None and latest.metrics.get("report_id") == report["report_id"]:
                report["checkpoint"] = self._rel(latest.checkpoint.path)
                self._members_row(member, report)
                changed = True
        if changed:
            self._save()

    def _decide(self) -> None:
        """The end of a generation (generation.SearchDriver, as every backend): losers will restore their
        winner's checkpoint, then take the new hyperparameters; the decision is durable before any trial acts on it."""
        record = self.record
        reports = [self.reports[m] for m in range(self.population)]
        hparams = [dict(h) for h in self.hparams]
        checkpoints = [r["checkpoint"] for r in reports]

        def apply(exploits: list[Exploit]) -> None:
            self.start, self.own = list(checkpoints), [None] * self.population
            for exploit in exploits:
                self.start[exploit.loser] = checkpoints[exploit.winner]
                self.own[exploit.loser] = checkpoints[exploit.loser]
                self.hparams[exploit.loser] = dict(exploit.new)

        def checkpoint() -> None:
            if record.finished:
                self.final = dict(enumerate(reports))
                self.final_hparams = hparams
            self.reports = {}
            self._save()

        def completed_rows() -> list[dict]:
            return sorted((row for (m, g), rows in self.rows.items() if g < record.generation for row in rows), key=lambda row: (row["epoch"], row["member"]))

        epoch = max(int(r["metrics"]["epoch"]) for r in reports)
        self.driver.end_generation(epoch, hparams, state_metrics([r["metrics"] for r in reports]), apply, checkpoint, completed_rows)
        if record.finished:
            self.driver.progress.close()
            for board in self._boards.values():
                board.close()

    # ---- side outputs
    def _board(self, member: int, rows: list[dict]) -> None:
        try:
            board = self._boards.setdefault(member, TensorBoard(self.workdir / "tensorboard" / f"member_{member:02d}"))
            for row in rows:
                board.add(row)
            if board.writer is not None:
                board.writer.flush()
        except Exception as err:  # TensorBoard is a convenience; the CSV tables are the record
            self.log(f"tensorboard: {err}")

    def _members_row(self, member: int, report: dict) -> None:
        path = self.folder / MEMBERS_FILE
        fields = ("generation", "member", "trial_id", "node_id", "torch_threads", "restored_member", "restored_checksum", "saved_checksum", "report_id")
        trial = self._trials.get(member)
        values = {**{k: report["metrics"].get(k, "") for k in fields}, "trial_id": trial.trial_id if trial else "", "checkpoint": report["checkpoint"]}
        new = not path.exists()
        with open(path, "a") as f:
            if new:
                f.write(",".join((*fields, "checkpoint")) + "\n")
            f.write(",".join(str(values[k]) for k in (*fields, "checkpoint")) + "\n")


def _reset_failures(trial) -> None:
    trial.run_metadata.num_failures = 0
    trial.run_metadata.invalidate_cache()


def _skip_used_checkpoint_names(trial) -> None:
    """Tune names checkpoints checkpoint_<index> by a counter kept with the trial. A trial restored from an
    experiment snapshot older than its last checkpoints would count from the snapshot and overwrite them -
    checkpoints other members are to restore from. Continue after the highest index on disk instead."""
    if getattr(trial.storage, "trial_dir_name", None) is None:  # a new trial: its folder does not exist yet
        return
    folder = Path(trial.storage.trial_fs_path)
    used = [int(p.name[len("checkpoint_") :]) for p in folder.glob("checkpoint_*") if p.name[len("checkpoint_") :].isdigit()]
    if used and trial.storage.current_checkpoint_index < max(used):
        trial.storage.current_checkpoint_index = max(used)


def _set_latest_checkpoint(trial, folder: Path | None, metrics: dict) -> None:
    """Point a (paused or pending) trial at the checkpoint it must start from, as Ray's own PBT does on exploit."""
    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint

    manager = trial.run_metadata.checkpoint_manager
    manager._latest_checkpoint_result = None if folder is None else _TrainingResult(checkpoint=Checkpoint(str(folder)), metrics=dict(metrics))
    trial.invalidate_json_state()


def _read_reports(path: Path) -> dict[tuple[int, int], list[dict]]:
    """Per-epoch rows by (member, generation); a later report of the same generation replaces an earlier one."""
    rows: dict[tuple[int, int], list[dict]] = {}
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        rows[(int(entry["member"]), int(entry["generation"]))] = entry["rows"]
    return rows


def _append_jsonl(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write("\n" + json.dumps(entry) + "\n")  # a leading newline isolates a line cut by an earlier kill
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


__all__ = ["BinaryTournamentPBT", "RayBackendError", "member_trainable", "run_ray", "state_checksum"]
