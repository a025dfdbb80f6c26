"""The Ray backend's trial: one member, generation by generation, in a Ray worker process."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import uuid
from pathlib import Path

from ..config import Config
from ..data import LFADSData
from ..errors import CheckpointError
from ..train.checkpoint import load_checkpoint, save_checkpoint
from ..train.trainer import Trainer
from .pbt import generation_epochs

MEMBER_CKPT = "member.ckpt"
PAYLOAD_KEYS = ("model", "optimizer", "trainer", "rng", "history")  # a one-member Trainer's state in MEMBER_CKPT


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
