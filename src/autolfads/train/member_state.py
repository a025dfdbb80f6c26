"""Each member's training state besides weights and Adam: smoothed metrics, best epoch, the learning-rate
schedule's counters, the stop and divergence flags. One (P,) tensor per field, all in one object, so the
Trainer, checkpoints and `population_state` copy, slice and save the same list."""

import math
from dataclasses import dataclass, fields

import torch


@dataclass
class MemberState:
    lr: torch.Tensor  # the current learning rate (on the model's device; the optimizer reads it)
    smth_metric: torch.Tensor  # smoothed val_nll_heldin (HELDIN_METRIC); NaN before the first epoch
    smth_all: torch.Tensor  # smoothed val_recon, every neuron and bin (ALL_METRIC)
    smth_sampled: torch.Tensor  # smoothed val_recon_sampled (SAMPLED_METRIC)
    best_metric: torch.Tensor  # the best selection metric (train.select_metric) once the KL/L2 ramps are done
    lr_best_metric: torch.Tensor  # lr_rule plateau: the best selection metric since the start
    best_epoch: torch.Tensor  # the epoch of best_metric (-1: none yet)
    plateau_epochs: torch.Tensor  # lr_rule plateau: epochs without a new lr_best_metric
    val_loss_window: torch.Tensor  # lr_rule lfads_tf2: (P, lr_patience + 1) raw val_loss, oldest first
    epochs_at_lr: torch.Tensor  # lr_rule lfads_tf2: epochs trained at the current lr
    stopped: torch.Tensor  # early stopping or lr_stop reached (the caller decides what to do)
    diverged: torch.Tensor  # a NaN/Inf loss was seen: updates skipped until PBT replaces the member

    @classmethod
    def new(cls, lr_init: torch.Tensor, lr_patience: int) -> "MemberState":
        size = len(lr_init)
        nan, inf = torch.full((size,), math.nan), torch.full((size,), math.inf)
        return cls(
            lr=lr_init.clone(),
            smth_metric=nan.clone(),
            smth_all=nan.clone(),
            smth_sampled=nan.clone(),
            best_metric=inf.clone(),
            lr_best_metric=inf.clone(),
            best_epoch=torch.full((size,), -1),
            plateau_epochs=torch.zeros(size, dtype=torch.long),
            val_loss_window=torch.full((size, lr_patience + 1), math.nan),
            epochs_at_lr=torch.zeros(size, dtype=torch.long),
            stopped=torch.zeros(size, dtype=torch.bool),
            diverged=torch.zeros(size, dtype=torch.bool),
        )

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in MEMBER_STATE_FIELDS]

    def to_dict(self) -> dict[str, torch.Tensor]:
        """Copies on the CPU, keyed as in a checkpoint's state["trainer"]."""
        return {name: getattr(self, name).cpu().clone() for name in MEMBER_STATE_FIELDS}

    @classmethod
    def from_dict(cls, saved: dict, device: torch.device) -> "MemberState":
        """From a checkpoint's state["trainer"] (other keys are ignored); lr goes to `device`."""
        state = cls(**{name: saved[name].clone() for name in MEMBER_STATE_FIELDS})
        state.lr = state.lr.to(device)
        return state


MEMBER_STATE_FIELDS = tuple(field.name for field in fields(MemberState))
