"""The embedded backend: the whole population in one process, on the model's population axis.

No cluster and no Ray: P members train side by side with batched matrix products on the CPU or one GPU.
An exploit copies a slice of every weight and optimizer tensor. After every generation the whole search
(weights, optimizer state, training state, random streams and the record of decisions) is checkpointed
atomically, so a killed search reruns from the last completed generation.
"""

import math
import time
from pathlib import Path

import numpy as np
from ..config import Config
from ..data import LFADSData
from ..train.checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
from ..train.run import TensorBoard
from ..train.trainer import METRIC, PBT_METRICS, Trainer
from .pbt import best_member, generation_epochs, plan_exploits, should_stop
from .progress import SearchProgress
from .results import SearchOutcome, SearchRecord, SearchSettings, elapsed_since, search_log, write_best_model, write_tables
from .space import SearchSpace

CHECKPOINT = "search.ckpt"
STATE_METRICS = (METRIC, "val_nll_heldin", "val_bps", "val_co_bps", "val_fp_bps", "val_r2", "lr", *(name for name in PBT_METRICS if name != METRIC))  # copied into state.csv


def run_embedded(config: Config, data: list[LFADSData], space: SearchSpace, settings: SearchSettings, workdir: Path) -> SearchOutcome:
    log = search_log(workdir)
    remove_stale_temporaries(workdir)
    rng = np.random.default_rng(settings.seed)
    seeds = [config.train.seed + member for member in range(settings.population)]
    path = workdir / CHECKPOINT
    if path.exists():
        payload = load_checkpoint(path)
        record = SearchRecord.from_dict(payload["search"])
        trainer = Trainer(config, data, population=payload["trainer"]["members"], member_seeds=seeds)
        trainer.load_state_dict(payload)
        rng.bit_generator.state = record.rng_state
        log(f"resumed the search in {workdir} after generation {record.generation - 1} (epoch {trainer.epoch})")
    else:
        record = SearchRecord()
        trainer = Trainer(config, data, population=space.sample_initial(settings.population, rng), member_seeds=seeds)
        log(f"new search: population {settings.population} on {trainer.device}, {settings.epochs_per_generation} epochs per generation after a {trainer.ramp_end_epoch}-epoch ramp")
    boards = [TensorBoard(workdir / "tensorboard" / f"member_{m:02d}") for m in range(settings.population)]
    progress = SearchProgress(settings.population, settings.max_generations, record.generation, log)
    start = time.perf_counter()
    try:
        while not record.finished:
            began = time.perf_counter()
            epochs = generation_epochs(record.generation, settings.epochs_per_generation, trainer.ramp_end_epoch)
            for done in range(1, epochs + 1):
                trainer.run_epoch(nlb=settings.metric.startswith("nlb_") and done == epochs)  # NLB metrics to rank by
                for row in trainer.history[-settings.population :]:
                    row["generation"] = record.generation
                    boards[row["member"]].add(row)
                progress.epoch(done, epochs)
            last_rows = trainer.history[-settings.population :]
            metrics = {name: [row.get(name, math.nan) for row in last_rows] for name in STATE_METRICS if name in last_rows[0]}
            hparams = [trainer.member_hparams(m) for m in range(settings.population)]
            record.add_generation(trainer.epoch, hparams, metrics)
            record.finished = should_stop(record.best_by_generation, settings.max_generations)
            exploits = [] if record.finished else plan_exploits(record.generation, ranked(metrics[settings.metric], settings.metric), hparams, space, rng)
            for exploit in exploits:  # restore the winner's state first, then apply the new hyperparameters
                trainer.copy_member(exploit.winner, exploit.loser)
                trainer.set_member_hparams(exploit.loser, exploit.new)
            record.add_exploits(exploits)
            record.generation += 1
            record.rng_state = rng.bit_generator.state
            record.wall_time_s = elapsed_since(start, record)
            start = time.perf_counter()
            save_checkpoint({**trainer.state_dict(), "config": config.to_dict(), "search": record.to_dict()}, path)
            write_tables(workdir, record, trainer.history)
            best = best_member(metrics[METRIC])
            log(
                f"generation {record.generation - 1}: {time.perf_counter() - began:.1f} s, best {METRIC} {metrics[METRIC][best]:.5f} "
                f"(member {best}), {len(exploits)} exploits{'; stopping' if record.finished else ''}"
            )
            for member, value in enumerate(metrics[METRIC]):
                progress.member_done(member, value)
            progress.generation_done(record.finished)
    finally:
        progress.close()
        for board in boards:
            board.close()

    final_rows = trainer.history[-settings.population :]
    best = best_member(ranked([row[settings.metric] for row in final_rows], settings.metric))
    hparams = trainer.member_hparams(best)
    outputs = write_best_model(workdir, config, hparams, trainer.member_state(best), data, log)
    outcome = SearchOutcome(workdir, record.generation, best, final_rows[best][METRIC], hparams, outputs[0].parent, outputs, record.wall_time_s, final_rows[best])
    log(outcome.summary())
    return outcome


def ranked(values: list[float], metric: str) -> list[float]:
    """Metric values as PBT ranks them: lower is better."""
    return [PBT_METRICS[metric] * value for value in values]
