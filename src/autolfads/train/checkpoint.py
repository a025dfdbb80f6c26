"""Checkpoint files: written atomically, read with weights_only=True.

A checkpoint is a plain dict of tensors, numbers, strings and lists (no pickled objects), so loading
one cannot execute code. Writes go through files.write_atomic: a kill at any moment leaves either the old
or the new checkpoint, whole.
"""

import math
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..files import write_atomic

FORMAT_VERSION = 2  # 2: trainer state of the lfads-tf2 LR rule and the sampled metric (issue 12)


def save_checkpoint(payload: dict, path: Path) -> None:
    write_atomic(path, lambda tmp: torch.save({"format_version": FORMAT_VERSION, **payload}, tmp), mkdir=True)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        # torch's own message runs to many lines and suggests weights_only=False: never the right advice here.
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}); it is corrupt or not an autolfads checkpoint"
        ) from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not an autolfads checkpoint of format version {FORMAT_VERSION}")
    _add_all_neuron_score(payload)
    return payload


def _add_all_neuron_score(payload: dict) -> None:
    """A checkpoint written before the all-neuron score (smth_all) holds none: NaN, as before a first epoch,
    so smoothing starts afresh. Its config names no train.select_metric: it selected by the held-in score
    (config.saved_config keeps that)."""
    trainer = payload.get("trainer")
    if isinstance(trainer, dict) and "smth_all" not in trainer and "smth_metric" in trainer:
        trainer["smth_all"] = torch.full_like(trainer["smth_metric"], math.nan)


def remove_stale_temporaries(folder: Path) -> None:
    """Temporary files left by a killed writer are never valid checkpoints."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
