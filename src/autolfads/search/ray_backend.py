"""The Ray backend: one Ray Tune trial per member, or per group of k members, on one machine or a cluster.

Every trial trains ONE member (a one-member Trainer), or with members_per_trial k a group of k members on
one population axis (members 0..k-1, k..2k-1, ...; the group shares the trial's CPUs and GPU), a generation
at a time and reports once per generation with one checkpoint. PBT is per member whatever k: an exploit
copies the winner's slice of the winner's trial checkpoint into the loser's place in its own trial. `BinaryTournamentPBT`, a Ray Tune TrialScheduler, ends every generation
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

Code: this module is the driver (run_ray); ray_trainable the trial; ray_scheduler the scheduler; every use of
Tune's private API is in ray_tune_private.

Files (besides the common results layout of results.py):
    ray/search/          the Ray Tune experiment (one folder per trial, with its checkpoints)
    ray/pbt_state.json   the scheduler's state
    ray/reports.jsonl    every accepted report, appended (per-epoch rows for metrics.csv)
    ray/members.csv      one row per accepted report: node, trial, checksums of the restored and saved state
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from pathlib import Path

from ..config import Config, member_hparams
from ..data.dataset import LFADSData
from ..errors import AutoLFADSError, ConfigError
from ..layout import MEMBER_CKPT, RAY_DIR
from ..names import METRIC
from ..train.checkpoint import load_checkpoint
from .generation import best_ranked, state_metrics
from .ray_scheduler import MAX_FAILURES, BinaryTournamentPBT, restoring_in, trial_group
from .ray_trainable import group_trainable, member_state
from .ray_tune_private import resume_everything, use_token_if_available
from .results import SearchOutcome, SearchSettings, search_log, write_best_model
from .space import SearchSpace

EXPERIMENT = "search"
NUM_TO_KEEP = 4  # checkpoints kept per trial: a loser restores from its winner's latest, never deleted under it


class RayBackendError(AutoLFADSError):
    """The Ray search could not finish (a member failed repeatedly, or it was interrupted)."""


def run_ray(
    config: Config,
    data: list[LFADSData],
    space: SearchSpace,
    settings: SearchSettings,
    workdir: Path,
    address: str | None = None,
    cpus_per_member: float = 1.0,
    gpus_per_member: float = 0.0,
    members_per_trial: int = 1,
    cpus_per_trial: float | None = None,
    gpus_per_trial: float | None = None,
) -> SearchOutcome:
    """Run (or resume) the search as one Ray Tune trial per member, or per group of members_per_trial members.
    address: None starts a local Ray instance (dashboard off); "auto" or HOST:PORT joins a running cluster.
    A trial asks for cpus_per_trial CPUs (also its torch threads) and gpus_per_trial GPUs; by default
    members_per_trial x the per-member figures (e.g. --members-per-trial 8 --gpus-per-trial 1: eight members
    share one GPU on one population axis)."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ConfigError(
            "the Ray backend needs Ray: pip install 'autolfads[ray]' (or use --backend embedded)"
        ) from None
    if cpus_per_member <= 0 or gpus_per_member < 0:
        raise ConfigError(
            f"cpus_per_member must be > 0 and gpus_per_member >= 0, got {cpus_per_member} and {gpus_per_member}"
        )
    if not 1 <= members_per_trial <= settings.population:
        raise ConfigError(
            f"--members-per-trial must be between 1 and the population ({settings.population}), got {members_per_trial}"
        )
    cpus = cpus_per_member * members_per_trial if cpus_per_trial is None else cpus_per_trial
    gpus = gpus_per_member * members_per_trial if gpus_per_trial is None else gpus_per_trial
    if cpus <= 0 or gpus < 0:
        raise ConfigError(f"cpus_per_trial must be > 0 and gpus_per_trial >= 0, got {cpus} and {gpus}")
    workdir = Path(workdir).resolve()
    log = search_log(workdir)
    base = member_hparams(config)
    scheduler = BinaryTournamentPBT(workdir, space, settings, base, members_per_trial)
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
                    if address != "auto" and "RAY_AUTH_MODE" not in os.environ and use_token_if_available():
                        log("a Ray token is at hand: joining the cluster with RAY_AUTH_MODE=token")
                    ray.init(address=address, **quiet)
                except (ConnectionError, ValueError) as err:
                    raise ConfigError(
                        f"cannot join the Ray cluster at {address!r}: {err}. Start one (`ray start --head`, `ray up deploy/ray/...`), "
                        "set RAY_AUTH_MODE=token if the cluster uses token authentication, or leave out the address for a local Ray instance"
                    ) from None
            started_ray = True
            _check_local_resources(ray, cpus, gpus)
        try:
            _fit(tune, config, data, settings, workdir, scheduler, cpus, gpus, log)
        finally:
            if started_ray:
                ray.shutdown()
        scheduler = BinaryTournamentPBT(
            workdir, space, settings, base, members_per_trial
        )  # the state on disk is the truth
        if not scheduler.finished:
            raise RayBackendError(
                f"the search stopped after {scheduler.record.generation} generations: a member failed more than {MAX_FAILURES} times "
                f"or the run was interrupted (see {workdir / RAY_DIR / EXPERIMENT} and search.log); rerun the same command to resume"
            )
    final = scheduler.final
    metrics = state_metrics([final[m]["metrics"] for m in range(settings.population)])
    best = best_ranked(metrics, settings.metric)
    state = member_state(load_checkpoint(workdir / final[best]["checkpoint"] / MEMBER_CKPT), best)
    hparams = dict(scheduler.final_hparams[best])
    outputs = write_best_model(workdir, config, hparams, state, data, log)
    record = scheduler.record
    last = {name: value for name, value in final[best]["metrics"].items() if isinstance(value, float)}
    return SearchOutcome(
        workdir,
        record.generation,
        best,
        metrics[METRIC][best],
        hparams,
        outputs[0].parent,
        outputs,
        record.wall_time_s,
        best_metrics=last,
        ranked_by=settings.metric,
    )


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
            f"a trial needs {cpus:g} CPUs and {gpus:g} GPUs, but this machine's Ray instance has {available.get('CPU', 0):g} CPUs "
            f"and {available.get('GPU', 0):g} GPUs; lower --cpus-per-member/--gpus-per-member (or the per-trial figures) or join a cluster with --address"
        )


def _fit(tune, config, data, settings, workdir, scheduler, cpus, gpus, log) -> None:
    trainable = tune.with_resources(
        tune.with_parameters(
            group_trainable,
            config_dict=config.to_dict(),
            data=data,
            workdir=str(workdir),
            epochs_per_generation=settings.epochs_per_generation,
            max_generations=settings.max_generations,
            nlb=settings.metric.startswith("nlb_"),
            cpus=float(cpus),
            gpus=float(gpus),
        ),
        {"cpu": cpus, "gpu": gpus},
    )
    experiment = workdir / RAY_DIR / EXPERIMENT
    if tune.Tuner.can_restore(str(experiment)):
        log(f"restoring the Ray Tune experiment {experiment}")
        with restoring_in(workdir):
            tuner = tune.Tuner.restore(
                str(experiment), trainable=trainable, resume_unfinished=True, resume_errored=True, **resume_everything()
            )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"group": tune.grid_search(list(range(len(scheduler.groups))))},
            tune_config=tune.TuneConfig(
                scheduler=scheduler,
                num_samples=1,
                metric=METRIC,
                mode="min",
                reuse_actors=False,  # a fresh process per generation: spreads over nodes, survives node loss
                trial_name_creator=functools.partial(_trial_name, scheduler.groups),
                trial_dirname_creator=functools.partial(_trial_name, scheduler.groups),
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


def _trial_name(groups: list[tuple[int, ...]], trial) -> str:
    """member_003_<id> for one member per trial (or an experiment made before groups), members_004-007_<id> for a group."""
    members = groups[trial_group(trial)]
    if len(members) == 1:
        return f"member_{members[0]:03d}_{trial.trial_id}"
    return f"members_{members[0]:03d}-{members[-1]:03d}_{trial.trial_id}"


__all__ = ["BinaryTournamentPBT", "RayBackendError", "group_trainable", "run_ray"]
