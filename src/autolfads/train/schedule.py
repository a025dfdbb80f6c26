"""The end of an epoch for each member: smoothing, the best epoch, the learning-rate rules and early stopping.

A pure update: (per-member state, this epoch's validation metrics) -> (new state, metrics to add), so the
rules can be checked by hand without a model.
"""

import math
from dataclasses import replace

import torch

from ..config import TrainConfig
from ..names import ALL_METRIC, HELDIN_METRIC, SAMPLED_METRIC
from .member_state import MemberState
from .metrics import smooth


def end_epoch(
    state: MemberState, metrics: dict[str, torch.Tensor], epoch: int, train: TrainConfig, ramp_end_epoch: int
) -> tuple[MemberState, dict[str, torch.Tensor]]:
    """metrics: at least val_nll_heldin and val_recon (and val_loss for lr_rule lfads_tf2), (P,) each. Returns
    the new state and HELDIN_METRIC, ALL_METRIC (SAMPLED_METRIC when val_recon_sampled is given) and `improved`
    (1.0 for a new best epoch by train.select_metric)."""
    state = replace(
        state,
        smth_metric=smooth(state.smth_metric, _unless_diverged(state, metrics["val_nll_heldin"])),
        smth_all=smooth(state.smth_all, _unless_diverged(state, metrics["val_recon"])),
    )
    added = {HELDIN_METRIC: state.smth_metric.clone(), ALL_METRIC: state.smth_all.clone()}
    if "val_recon_sampled" in metrics:
        state = replace(
            state, smth_sampled=smooth(state.smth_sampled, _unless_diverged(state, metrics["val_recon_sampled"]))
        )
        added[SAMPLED_METRIC] = state.smth_sampled.clone()
    selected = selection_metric(state, train.select_metric)
    ramps_done = epoch >= ramp_end_epoch
    improved = ramps_done & (selected < state.best_metric)
    state = replace(
        state,
        best_metric=torch.where(improved, selected, state.best_metric),
        best_epoch=torch.where(improved, epoch, state.best_epoch),
    )
    added["improved"] = improved.float()
    if train.lr_schedule and train.lr_rule == "plateau":
        state = plateau_rule(state, selected, train)
    elif train.lr_schedule:
        state = lfads_tf2_rule(state, metrics["val_loss"], epoch, train, ramp_end_epoch)
    if ramps_done:
        since_best = epoch - torch.clamp(state.best_epoch, min=ramp_end_epoch)
        state = replace(state, stopped=state.stopped | (since_best >= train.patience))
    return state, added


def selection_metric(state: MemberState, name: str) -> torch.Tensor:
    """The smoothed score train.select_metric names."""
    return {HELDIN_METRIC: state.smth_metric, ALL_METRIC: state.smth_all}[name]


def plateau_rule(state: MemberState, selected: torch.Tensor, train: TrainConfig) -> MemberState:
    """torch's ReduceLROnPlateau on the smoothed selection metric (lfads-torch): lr_patience bad epochs are
    tolerated, the next decays the rate; a member stops once its rate is below lr_stop."""
    better = selected < state.lr_best_metric
    plateau_epochs = torch.where(better, 0, state.plateau_epochs + 1)
    decay = plateau_epochs > train.lr_patience
    lr = torch.where(decay.to(state.lr.device), state.lr * train.lr_decay, state.lr)
    return replace(
        state,
        lr=lr,
        lr_best_metric=torch.where(better, selected, state.lr_best_metric),
        plateau_epochs=torch.where(decay, 0, plateau_epochs),
        stopped=state.stopped | (lr < train.lr_stop).cpu(),
    )


def lfads_tf2_rule(
    state: MemberState, val_loss: torch.Tensor, epoch: int, train: TrainConfig, ramp_end_epoch: int
) -> MemberState:
    """lfads-tf2's update_learning_rate: decay when the raw val_loss exceeds the worst of the previous
    lr_patience epochs, at least lr_patience epochs after the last decay and after the ramps; a member stops
    once an epoch has trained at lr_stop."""
    stopped = state.stopped | (state.lr <= train.lr_stop).cpu()
    window = torch.cat([state.val_loss_window[:, 1:], _unless_diverged(state, val_loss)[:, None]], dim=1)
    epochs_at_lr = state.epochs_at_lr + 1
    before, current = window[:, :-1], window[:, -1]
    worst = torch.where(torch.isnan(before), -math.inf, before).amax(1)  # pandas' max skips NaN
    decay = (
        (epoch >= ramp_end_epoch + train.lr_patience)
        & (epochs_at_lr >= train.lr_patience)
        & (current > worst)
        & ~torch.isnan(before).all(1)
    )
    lr = torch.where(decay.to(state.lr.device), (state.lr * train.lr_decay).clamp_min(train.lr_stop), state.lr)
    return replace(
        state,
        lr=lr,
        val_loss_window=window,
        epochs_at_lr=torch.where(decay, 0, epochs_at_lr),
        stopped=stopped,
    )


def _unless_diverged(state: MemberState, values: torch.Tensor) -> torch.Tensor:
    """A diverged member's metric counts as NaN: it can neither improve nor decay."""
    return torch.where(state.diverged, math.nan, values)
