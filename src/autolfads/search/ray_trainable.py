"""The Ray backend's trial: a group of members (--members-per-trial, on the population axis), generation by
generation, in a Ray worker process."""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
import uuid
from pathlib import Path

from ..config import Config
from ..data.dataset import LFADSData
from ..errors import CheckpointError
from ..layout import MEMBER_CKPT
from ..runtime import reuse_freed_memory, set_torch_threads
from ..train.checkpoint import load_checkpoint, save_checkpoint
from ..train.nlb_scoring import load_nlb_targets
from ..train.population_state import PopulationState
from ..train.trainer import Trainer, seeds_of
from .pbt import generation_epochs

DECISIONS = "autolfads-decisions"  # the DecisionBoard actor's name (in the search driver's Ray namespace)


class DecisionBoard:
    """A Ray actor, made by the driver: the scheduler posts each generation's trial configurations here before
    it lets the trials that wait in their process go on; each reads its own."""

    def __init__(self) -> None:
        self.configs: dict[int, dict[int, dict]] = {}  # generation -> group -> trial configuration

    def post(self, generation: int, configs: dict[int, dict]) -> None:
        self.configs = {generation: configs}  # only the newest is ever asked for

    def next_config(self, group: int, generation: int) -> dict:
        if generation not in self.configs:
            raise RuntimeError(f"trial {group} was let on to generation {generation}, but no decision was posted")
        return self.configs[generation][group]


def checkpoint_members(payload: dict) -> list[int]:
    """The members a trial checkpoint holds, in the order of its population axis."""
    return [int(m) for m in payload["members"]] if "members" in payload else [int(payload["member"])]


def member_state(payload: dict, member: int) -> PopulationState:
    """One member's state (a one-member Trainer's) out of a trial checkpoint."""
    return PopulationState.from_dict(payload).select([checkpoint_members(payload).index(member)])


def group_trainable(
    tune_config: dict,
    *,
    config_dict: dict,
    data: list[LFADSData],
    workdir: str,
    epochs_per_generation: int,
    nlb: bool,
    cpus: float,
    gpus: float,
) -> None:
    """A group of members, generation by generation, in one process while the scheduler lets it (every trial
    of the search has a place on the cluster at once): each generation starts from the scheduler's decision
    (`_start_generation`), trains the group on one population axis and reports the generation's last epoch of
    every member with one checkpoint; the next generation's configuration comes from the scheduler's
    DecisionBoard."""
    import ray
    from ray import tune

    started_at = time.time()
    set_torch_threads(max(1, int(cpus)))  # Ray does not: two threads per small model is 5-10x slower
    freed_memory_kept = reuse_freed_memory()  # as the command line does: each step reuses the last one's memory
    config = Config.model_validate(config_dict)
    if gpus == 0 and config.train.device == "auto":  # a trial given no GPU must not take one
        config = Config.model_validate({**config_dict, "train": {**config_dict["train"], "device": "cpu"}})
    members = [int(m) for m in tune_config["members"]]
    hparams = [dict(h) for h in tune_config["hparams"]]
    seeds = seeds_of(config.train.seed, members)
    trainer = Trainer(config, data, population=hparams, member_seeds=seeds, nlb_targets=load_nlb_targets(config))
    context = {
        "group": int(tune_config["group"]),
        "node_id": ray.get_runtime_context().get_node_id(),
        "pid": os.getpid(),
        "freed_memory_kept": freed_memory_kept,
    }
    while True:
        restored = _start_generation(trainer, tune_config, Path(workdir))
        generation = int(tune_config["generation"])
        first = len(trainer.history)
        epochs = generation_epochs(generation, epochs_per_generation, trainer.ramp_end_epoch)
        for done in range(1, epochs + 1):
            trainer.run_epoch(nlb=nlb and done == epochs)  # NLB metrics to rank by (search --metric)
        rows = [
            {**row, "generation": generation, "member": members[int(row["member"])]} for row in trainer.history[first:]
        ]
        # Returns once the scheduler has decided the generation and lets this trial go on in its process (else
        # Tune pauses or stops it here: a fresh process picks up the next generation from the checkpoint).
        _report(tune, trainer, config, members, generation, rows, restored, {**context, "started_at": started_at})
        tune_config = ray.get(ray.get_actor(DECISIONS).next_config.remote(context["group"], generation + 1))
        started_at = time.time()


def _start_generation(trainer: Trainer, tune_config: dict, workdir: Path) -> list[tuple[int, str]]:
    """Each member's start of the generation (none before the first): its own state, or after an exploit the
    winner's weights, optimizer and training state with its own random stream and history; THEN this trial's
    hyperparameters. Returns (restored member, checksum) of each (-1 and "" when nothing was restored)."""
    members, expected = [int(m) for m in tune_config["members"]], int(tune_config["generation"])
    starts, sources, owns = tune_config["start"], tune_config["source"], tune_config["own"]
    if expected == 0:
        return [(-1, "")] * len(members)
    if None in starts:
        raise CheckpointError(
            f"trial {tune_config['group']} (members {members}) has no checkpoint to start generation {expected} from"
        )
    payloads: dict[str, dict] = {}

    def payload(path: str) -> dict:
        if path not in payloads:
            payloads[path] = load_checkpoint(workdir / path / MEMBER_CKPT, map_location=trainer.device)
            done = int(payloads[path]["generations_done"])
            if done != expected:
                raise CheckpointError(
                    f"{path} holds the state after {done} generations, but generation {expected} is next"
                )
        return payloads[path]

    pieces = []
    for member, start, source, own in zip(members, starts, sources, owns, strict=True):
        piece = member_state(payload(start), int(source))
        if own is not None:  # exploited: the member's own random stream and history stay
            mine = member_state(payload(own), member)
            piece.rng["members"], piece.history = mine.rng["members"], mine.history
        pieces.append(piece)
    state = PopulationState.join(pieces, [[i] for i in range(len(members))])
    restored = [(int(source), state.checksum(i)) for i, source in enumerate(sources)]
    for i, own in enumerate(owns):  # after the copy, so the winner's state does not overwrite them
        hparams = dict(tune_config["hparams"][i])
        changed = {name: value for name, value in hparams.items() if value != state.hparams[i][name]}
        state.set_hparams(i, hparams if own is not None else changed, trainer.config)
    trainer.load_population_state(state)
    return restored


def _report(
    tune, trainer: Trainer, config: Config, members: list[int], generation: int, rows: list[dict], restored, context
) -> None:
    """Report the generation's last epoch of every member with one checkpoint."""
    import torch

    state = trainer.population_state()
    per_member = []
    for i, member in enumerate(members):
        last = [row for row in rows if row["member"] == member][-1]
        per_member.append(
            {
                **{name: value for name, value in last.items() if name not in ("epoch", "member", "generation")},
                "member": member,
                "restored_member": restored[i][0],
                "restored_checksum": restored[i][1],
                "saved_checksum": state.checksum(i),
            }
        )
    metrics = {
        # Tune's own bookkeeping (its metric is train.select_metric); the scheduler reads "members"
        config.train.select_metric: min(float(m[config.train.select_metric]) for m in per_member),
        "epoch": trainer.epoch,
        "generation": generation,
        "group": context["group"],
        "node_id": context["node_id"],
        "pid": context["pid"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # flat over generations
        "torch_threads": torch.get_num_threads(),
        "freed_memory_kept": context["freed_memory_kept"],  # in Tune's own result.json of the trial
        "report_id": uuid.uuid4().hex,
        "started_at": context["started_at"],
        "members": json.dumps(per_member),
        "rows": json.dumps(rows),
    }
    with tempfile.TemporaryDirectory(prefix="autolfads-trial-") as folder:
        save_checkpoint(
            {**state.to_dict(), "config": config.to_dict(), "members": members, "generations_done": generation + 1},
            Path(folder) / MEMBER_CKPT,
        )
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def trial_groups(population: int, members_per_trial: int) -> list[tuple[int, ...]]:
    """The members of each trial: contiguous groups of members_per_trial (the last may be smaller)."""
    if members_per_trial < 1:
        raise ValueError(f"members_per_trial must be >= 1, got {members_per_trial}")
    return [
        tuple(range(first, min(first + members_per_trial, population)))
        for first in range(0, population, members_per_trial)
    ]


def trial_group(trial) -> int:
    """A trial's group (an experiment made before groups names its one member, the same number)."""
    return int(trial.config["group"] if "group" in trial.config else trial.config["member"])
