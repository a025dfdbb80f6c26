"""The Ray backend's driver: one Ray Tune trial per member, or per group of k members, on one machine or a cluster.

PBT is per member whatever k, with the embedded backend's end of a generation (`generation.SearchDriver`)
and random stream, so both backends make the same decisions. `ray_trainable` is the trial, `ray_scheduler`
the scheduler (synchronous generations, resumable from ray/pbt_state.json); every use of Tune's private API
is in `ray_tune_private`. The design is described in docs/architecture.md ("The Ray backend").
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
from ..train.checkpoint import load_checkpoint
from ..train.population_state import PopulationState
from .finish import FinishedSearch, finish_search
from .ray_scheduler import MAX_FAILURES, SynchronousPBT, restoring_in
from .ray_trainable import DECISIONS, DecisionBoard, group_trainable, member_state, trial_group
from .ray_tune_private import resume_everything, use_token_if_available
from .results import SearchOutcome, SearchSettings, search_log
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
    *,
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
    cpus, gpus = _trial_resources(
        settings, cpus_per_member, gpus_per_member, members_per_trial, cpus_per_trial, gpus_per_trial
    )
    workdir = Path(workdir).resolve()
    log = search_log(workdir)
    base = member_hparams(config)
    select = config.train.select_metric
    scheduler = SynchronousPBT(workdir, space, settings, base, select, members_per_trial)
    if scheduler.finished:
        if scheduler.driver.may_reopen():
            raise ConfigError(
                "the Ray backend does not continue a search its time budget stopped; rerun it with the budget it "
                "had, or search again in a new --workdir"
            )
        log(f"the search in {workdir} is complete; writing the best model again")
        return _outcome(scheduler, config, data, settings, workdir, log)
    started_ray = not ray.is_initialized()
    if started_ray:
        _start_ray(ray, address, log)
        _check_local_resources(ray, cpus, gpus)
    try:
        _fit(tune, config, data, settings, workdir, scheduler, {"cpu": cpus, "gpu": gpus}, log)
    finally:
        if started_ray:
            ray.shutdown()
    scheduler = SynchronousPBT(workdir, space, settings, base, select, members_per_trial)  # the state on disk
    if not scheduler.finished:
        raise RayBackendError(
            f"the search stopped after {scheduler.record.generation} generations: a member failed more than "
            f"{MAX_FAILURES} times or the run was interrupted (see {workdir / RAY_DIR / EXPERIMENT} and search.log); "
            "rerun the same command to resume"
        )
    return _outcome(scheduler, config, data, settings, workdir, log)


def _trial_resources(
    settings: SearchSettings,
    cpus_per_member: float,
    gpus_per_member: float,
    members_per_trial: int,
    cpus_per_trial: float | None,
    gpus_per_trial: float | None,
) -> tuple[float, float]:
    """A trial's CPUs and GPUs, checked."""
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
    return cpus, gpus


def _start_ray(ray, address: str | None, log) -> None:
    """A local Ray instance (address None: never a cluster found in the environment by accident) or a cluster's."""
    quiet = {"logging_level": logging.WARNING, "logging_config": ray.LoggingConfig(log_level="WARNING")}
    if address is None:
        ray.init(address="local", include_dashboard=False, **quiet)
        return
    try:
        _check_reachable(address)
        if address != "auto" and "RAY_AUTH_MODE" not in os.environ and use_token_if_available():
            log("a Ray token is at hand: joining the cluster with RAY_AUTH_MODE=token")
        ray.init(address=address, **quiet)
    except (ConnectionError, ValueError) as err:
        raise ConfigError(
            f"cannot join the Ray cluster at {address!r}: {err}. Start one (`ray start --head`, "
            "`ray up deploy/ray/...`), set RAY_AUTH_MODE=token if the cluster uses token authentication, or leave "
            "out the address for a local Ray instance"
        ) from None


def _outcome(scheduler, config: Config, data, settings: SearchSettings, workdir: Path, log) -> SearchOutcome:
    """The search's finish (best_model/, the ensemble) from the scheduler's record of the last generation."""
    final = scheduler.final

    def state_of(member: int) -> PopulationState:
        return member_state(load_checkpoint(workdir / final[member]["checkpoint"] / MEMBER_CKPT), member)

    finished = FinishedSearch(
        workdir=workdir,
        config=config,
        data=data,
        record=scheduler.record,
        hparams=scheduler.final_hparams,
        last_rows=[final[m]["metrics"] for m in range(settings.population)],
        member_state=state_of,
        select_metric=scheduler.select_metric,
        rank_metric=scheduler.driver.rank_metric,
        log=log,
    )
    return finish_search(finished)


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
            f"a trial needs {cpus:g} CPUs and {gpus:g} GPUs, but this machine's Ray instance has "
            f"{available.get('CPU', 0):g} CPUs and {available.get('GPU', 0):g} GPUs; lower "
            "--cpus-per-member/--gpus-per-member (or the per-trial figures) or join a cluster with --address"
        )


def _fit(tune, config, data, settings, workdir, scheduler, resources: dict[str, float], log) -> None:
    """resources: a trial's {"cpu": .., "gpu": ..}."""
    import ray

    trainable = tune.with_resources(
        tune.with_parameters(
            group_trainable,
            config_dict=config.to_dict(),
            data=data,
            workdir=str(workdir),
            epochs_per_generation=settings.epochs_per_generation,
            nlb=settings.ranks_by_nlb,
            cpus=float(resources["cpu"]),
            gpus=float(resources["gpu"]),
        ),
        resources,
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
                metric=config.train.select_metric,
                mode="min",
                reuse_actors=False,  # a trial that must stop waits for the next generation in a fresh process
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
    board = _decision_board()
    try:
        tuner.fit()
    finally:
        ray.kill(board)


def _decision_board():
    """The DecisionBoard actor, on the driver's node (it lives as long as the driver does)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    board = ray.remote(DecisionBoard).options(name=DECISIONS, num_cpus=0, scheduling_strategy=here).remote()
    ray.get(board.__ray_ready__.remote())
    return board


def _trial_name(groups: list[tuple[int, ...]], trial) -> str:
    """member_003_<id> for one member per trial (or an experiment made before groups), members_004-007_<id> for
    a group."""
    members = groups[trial_group(trial)]
    if len(members) == 1:
        return f"member_{members[0]:03d}_{trial.trial_id}"
    return f"members_{members[0]:03d}-{members[-1]:03d}_{trial.trial_id}"


__all__ = ["SynchronousPBT", "RayBackendError", "group_trainable", "run_ray"]
