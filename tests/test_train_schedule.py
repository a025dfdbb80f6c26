"""The end-of-epoch rules as a pure update over per-member state, checked against values worked out by hand
(no model, no data): smoothing and the best epoch, early stopping, both learning-rate rules."""

import math

import pytest
import torch

from autolfads.config import TrainConfig
from autolfads.names import ALL_METRIC, HELDIN_METRIC
from autolfads.train.member_state import MEMBER_STATE_FIELDS, MemberState
from autolfads.train.schedule import end_epoch


def run(train: TrainConfig, values: dict[str, list[float]], ramp_end_epoch: int, members: int = 1):
    """end_epoch over the epochs of `values` (metric name -> one value per epoch, every member the same)."""
    state = MemberState.new(torch.full((members,), train.lr_init), train.lr_patience)
    steps = []
    for epoch in range(len(next(iter(values.values())))):
        metrics = {name: torch.full((members,), column[epoch]) for name, column in values.items()}
        state, added = end_epoch(state, metrics, epoch, train, ramp_end_epoch)
        steps.append((state, added))
    return steps


def both(values: list[float]) -> dict[str, list[float]]:
    """The same values for the held-in and the all-neuron NLL (data without held-out neurons or forward bins)."""
    return {"val_nll_heldin": values, "val_recon": values}


def test_smoothing_best_epoch_and_early_stopping():
    # smoothed: 4, 0.3 * 4 + 0.7 * 2 = 2.6, 0.3 * 2.6 + 0.7 * 3 = 2.88, 2.964, 2.9892; ramps end at epoch 1, so
    # epoch 0 cannot be best; epoch 1 is; 2 epochs without a better one (epochs 2, 3) stop the member at epoch 3.
    steps = run(TrainConfig(patience=2), both([4.0, 2.0, 3.0, 3.0, 3.0]), ramp_end_epoch=1)
    for name in (ALL_METRIC, HELDIN_METRIC):
        assert [added[name].item() for _, added in steps] == pytest.approx([4.0, 2.6, 2.88, 2.964, 2.9892])
    assert [added["improved"].item() for _, added in steps] == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert [state.best_epoch.item() for state, _ in steps] == [-1, 1, 1, 1, 1]
    assert [state.stopped.item() for state, _ in steps] == [False, False, False, True, True]


def test_plateau_rule_decays_after_patience_bad_epochs_and_stops_below_lr_stop():
    # a constant metric: epoch 0 sets the best; epochs 1, 2 are bad; lr_patience 1 tolerates one, so epoch 2
    # halves the rate (counter reset), epoch 4 halves it again to 2.5e-4 < lr_stop 3e-4: stopped.
    train = TrainConfig(lr_schedule=True, lr_rule="plateau", lr_patience=1, lr_decay=0.5, lr_init=1e-3, lr_stop=3e-4)
    steps = run(train, both([5.0] * 5), ramp_end_epoch=0)
    assert [state.lr.item() for state, _ in steps] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])
    assert [state.plateau_epochs.item() for state, _ in steps] == [0, 1, 0, 1, 0]
    assert [state.stopped.item() for state, _ in steps] == [False] * 4 + [True]


def test_lfads_tf2_rule_decays_when_val_loss_exceeds_the_window_and_stops_after_an_epoch_at_lr_stop():
    # lr_patience 1: a window of the previous epoch. val_loss 3, 2, 4, 1, 5, 0: epoch 2 (4 > 2) and epoch 4
    # (5 > 1) decay, the second clamped at lr_stop; epoch 5 starts at lr_stop, so the member stops.
    train = TrainConfig(lr_schedule=True, lr_rule="lfads_tf2", lr_patience=1, lr_decay=0.5, lr_init=1e-3, lr_stop=3e-4)
    values = {**both([1.0] * 6), "val_loss": [3.0, 2.0, 4.0, 1.0, 5.0, 0.0]}
    steps = run(train, values, ramp_end_epoch=0)
    assert [state.lr.item() for state, _ in steps] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 3e-4, 3e-4])
    assert [state.epochs_at_lr.item() for state, _ in steps] == [1, 2, 0, 1, 0, 1]
    assert [state.stopped.item() for state, _ in steps] == [False] * 5 + [True]


def test_a_diverged_member_neither_improves_nor_moves_its_smoothed_metric():
    state = MemberState.new(torch.full((2,), 1e-3), lr_patience=1)
    state.diverged[1] = True
    values = torch.tensor([2.0, 1.0])
    state, added = end_epoch(state, {"val_nll_heldin": values, "val_recon": values}, 0, TrainConfig(), 0)
    for name in (ALL_METRIC, HELDIN_METRIC):
        assert added[name][0].item() == 2.0 and math.isnan(added[name][1].item())
    assert added["improved"].tolist() == [1.0, 0.0]


def test_the_update_is_pure_and_the_state_round_trips_a_checkpoint_dict():
    state = MemberState.new(torch.full((2,), 1e-3), lr_patience=1)
    before = {name: tensor.clone() for name, tensor in state.to_dict().items()}
    values = torch.tensor([2.0, 1.0])
    end_epoch(state, {"val_nll_heldin": values, "val_recon": values}, 0, TrainConfig(patience=0), 0)
    after = state.to_dict()
    assert all(
        torch.equal(
            before[name],
            after[name],
        )
        or torch.isnan(before[name]).all()
        for name in before
    )
    assert list(after) == list(MEMBER_STATE_FIELDS)
    restored = MemberState.from_dict({"epoch": 3, **after}, torch.device("cpu"))
    assert all(torch.equal(a, b) or torch.isnan(a).all() for a, b in zip(restored.tensors(), state.tensors()))


@pytest.mark.parametrize(
    ("select_metric", "best_epochs", "lr"),
    [(HELDIN_METRIC, [0, 1, 2, 3], [1e-3] * 4), (ALL_METRIC, [0, 0, 0, 0], [1e-3, 1e-3, 5e-4, 5e-4])],
)
def test_the_selection_metric_alone_picks_the_best_epoch_and_drives_the_plateau_rule(select_metric, best_epochs, lr):
    # held-in NLL falls every epoch while the all-neuron NLL rises (a model copying its input): smoothed, held-in
    # 4, 3.3, 2.6, 1.9 and all-neuron 4, 4.7, 5.4, 6.1. By held-in every epoch is a new best and the rate
    # stays; by the all-neuron score epoch 0 stays best and lr_patience 1 decays the rate at epoch 2.
    train = TrainConfig(
        select_metric=select_metric, lr_schedule=True, lr_rule="plateau", lr_patience=1, lr_decay=0.5, lr_init=1e-3
    )
    steps = run(train, {"val_nll_heldin": [4.0, 3.0, 2.3, 1.6], "val_recon": [4.0, 5.0, 5.7, 6.4]}, ramp_end_epoch=0)
    assert [added[HELDIN_METRIC].item() for _, added in steps] == pytest.approx([4.0, 3.3, 2.6, 1.9])
    assert [added[ALL_METRIC].item() for _, added in steps] == pytest.approx([4.0, 4.7, 5.4, 6.1])
    assert [state.best_epoch.item() for state, _ in steps] == best_epochs
    assert [state.lr.item() for state, _ in steps] == pytest.approx(lr)
    assert steps[-1][0].best_metric.item() == pytest.approx(min(added[select_metric].item() for _, added in steps))
