"""The embedded backend: the population on this machine, in W slices on the model's population axis.

No cluster and no Ray. `placement.plan_workers` splits the P members over W long-lived worker processes
(default: one per usable CPU, up to P; on GPUs one per GPU, every visible GPU or those of --gpus), each with
torch threads = its CPU share; W = 1 trains in this process. The driver loop below is the whole search: every
worker trains its slice a generation, the driver joins the slices into one population state,
`SearchDriver.end_generation` makes the PBT decisions (an exploit copies a member's slice of every weight,
Adam and training-state tensor, across workers as within one), checkpoints the whole search atomically
(weights, optimizer state, training state, random streams, the record of decisions) and the workers continue
from the exploited state. A member's trajectory does not depend on W: its random streams are its own and every
slice sees the same batches. A killed search, driver or worker, reruns from the last completed generation,
with any W.
"""

from collections.abc import Sequence
from pathlib import Path

import torch

from ..config import Config
from ..data.dataset import LFADSData
from ..layout import SEARCH_CKPT, TENSORBOARD_DIR, member_folder
from ..train.checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
from ..train.population_state import PopulationState
from ..train.records import TensorBoard
from ..train.trainer import seeds_of
from .finish import FinishedSearch, finish_search
from .generation import SearchDriver, state_metrics
from .pbt import Exploit, generation_epochs
from .placement import WorkerPlan, plan_workers, search_gpus, usable_cpus
from .progress import SearchProgress
from .results import SearchOutcome, SearchRecord, SearchSettings, search_log
from .space import SearchSpace
from .workers import InProcessWorkers, ProcessWorkers


def run_embedded(
    config: Config,
    data: list[LFADSData],
    space: SearchSpace,
    settings: SearchSettings,
    workdir: Path,
    plan: WorkerPlan,
) -> SearchOutcome:
    """plan: embedded_plan's, made before anything is written (a bad --workers or --gpus writes nothing)."""
    log = search_log(workdir)
    remove_stale_temporaries(workdir)
    path = workdir / SEARCH_CKPT
    payload = load_checkpoint(path) if path.exists() else None
    record = SearchRecord.from_dict(payload["search"]) if payload else SearchRecord()
    select = config.train.select_metric
    progress = SearchProgress(settings.population, settings.max_generations, select, record.generation, log)
    driver = SearchDriver(workdir, settings, space, record, log, progress, select)
    state = PopulationState.from_dict(payload) if payload else None
    try:
        if record.finished:
            _reopen(driver, config, workdir, state)
        if not record.finished:
            state = _train(config, data, space, settings, workdir, driver, state, plan)
    finally:
        progress.close()
    final = state.history[-settings.population :]
    finished = FinishedSearch(
        workdir=workdir,
        config=config,
        data=data,
        record=record,
        hparams=state.hparams,
        last_rows=final,
        member_state=lambda m: state.select([m]),
        select_metric=select,
        rank_metric=driver.rank_metric,
        log=log,
    )
    return finish_search(finished)


def embedded_plan(
    config: Config,
    population: int,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    gpus: Sequence[int] | None = None,
) -> WorkerPlan:
    """The workers of this machine (placement.plan_workers): its usable CPUs, and the GPUs of train.device and
    gpus (default: every visible GPU), one worker per GPU unless `workers` says otherwise."""
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    chosen = search_gpus(config.train.device, visible, gpus)
    return plan_workers(population, usable_cpus(), workers, threads_per_worker, chosen)


def _train(
    config, data, space, settings, workdir, driver: SearchDriver, state: PopulationState | None, plan: WorkerPlan
) -> PopulationState:
    """Generations until the stopping rule; returns the final population state."""
    record, log, population = driver.record, driver.log, settings.population
    hparams = state.hparams if state else [dict(values) for values in space.sample_initial(population, driver.rng)]
    seeds = seeds_of(config.train.seed, range(population))
    if state:
        log(
            f"resumed the search in {workdir} after generation {record.generation - 1} "
            f"(epoch {state.epoch}): {plan.describe()}"
        )
    else:
        log(
            f"new search: {plan.describe()}, {settings.epochs_per_generation} epochs per generation "
            "after the KL/L2 ramps"
        )
    pool = (InProcessWorkers if plan.workers == 1 else ProcessWorkers)(plan, config, data, hparams, seeds, log)
    boards = [TensorBoard(workdir / TENSORBOARD_DIR / member_folder(m)) for m in range(population)]
    history = state.history if state else []
    try:
        if state:
            pool.load(_slices(state, plan))
        while not record.finished:
            epochs = generation_epochs(record.generation, settings.epochs_per_generation, pool.ramp_end_epoch)
            slices = pool.train(epochs, nlb=settings.ranks_by_nlb, on_epoch=driver.progress.epoch)
            state = PopulationState.join(slices, plan.members)
            for row in state.history:
                row["generation"] = record.generation
                boards[row["member"]].add(row)
            history = history + state.history
            state.history = history
            _end_generation(driver, config, workdir, state)
            if not record.finished:
                pool.load(_slices(state, plan))
    finally:
        pool.close()
        for board in boards:
            board.close()
    return state


def _end_generation(driver: SearchDriver, config: Config, workdir: Path, state: PopulationState) -> None:
    """The PBT step on the joined population state (whose history is the whole search's), then its checkpoint."""
    driver.end_generation(
        state.epoch,
        state.hparams,
        state_metrics(state.history[-driver.settings.population :]),
        *_exploit_and_checkpoint(driver, config, workdir, state),
        lambda: state.history,
    )


def _reopen(driver: SearchDriver, config: Config, workdir: Path, state: PopulationState) -> None:
    """A finished search: go on if its time budget or --max-generations stopped it and the larger ones it is
    rerun with hold another generation."""
    driver.reopen(
        state.hparams,
        state_metrics(state.history[-driver.settings.population :]),
        *_exploit_and_checkpoint(driver, config, workdir, state),
    )


def _exploit_and_checkpoint(driver: SearchDriver, config: Config, workdir: Path, state: PopulationState):
    """The backend's two steps of the end of a generation, on the joined population state: apply the exploits
    (the winner's state first, then the new hyperparameters), and checkpoint the search."""

    def apply(exploits: list[Exploit]) -> None:
        for exploit in exploits:
            state.copy_member(exploit.winner, exploit.loser)
            state.set_hparams(exploit.loser, exploit.new, config)

    def checkpoint() -> None:
        save_checkpoint(
            {**state.to_dict(), "config": config.to_dict(), "search": driver.record.to_dict()}, workdir / SEARCH_CKPT
        )

    return apply, checkpoint


def _slices(state: PopulationState, plan) -> list[PopulationState]:
    """Each worker's members of a population state (the history stays with the driver)."""
    return [state.without_history().select(members) for members in plan.members]
