"""train/trainer.py: the population Trainer on tiny in-memory data. Member independence, learning, metric
keys, state round trips, per-member hyperparameters, divergence handling, early stopping, the learning-rate rules
and weight decay."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from autolfads.errors import ConfigError
from autolfads.names import ALL_METRIC, HELDIN_METRIC
from autolfads.train.checkpoint import load_checkpoint, save_checkpoint
from autolfads.train.population_state import PopulationState
from autolfads.train.trainer import Trainer
from helpers import config, make_data, set_member_hparams


@pytest.fixture(scope="module")
def cfg():
    return config()


@pytest.fixture(scope="module")
def data(cfg):
    return make_data(cfg.model)


def member_state(trainer: Trainer, p: int) -> dict[str, torch.Tensor]:
    return {name: value[p : p + 1] for name, value in trainer.model.state_dict().items()}


def assert_member_equal(pop: Trainer, p: int, other: Trainer, exact: bool = True, q: int = 0) -> None:
    """Member p of `pop` has the same weights as member q of `other` (exactly, or to float rounding)."""
    ours, theirs = member_state(pop, p), member_state(other, q)
    for name, value in theirs.items():
        if exact:
            assert torch.equal(ours[name], value), f"{name} of member {p}"
        else:
            torch.testing.assert_close(ours[name], value, atol=1e-6, rtol=1e-5, msg=f"{name} of member {p}")


def params_snapshot(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.params]


# ============================================================================ population == separate runs

POPULATIONS = {
    "lr": [{"lr_init": 1e-3}, {"lr_init": 1e-2}],
    "many": [
        {"lr_init": 1e-3, "dropout_rate": 0.1, "cd_rate": 0.0, "kl_ic_weight": 1e-3, "l2_gen_scale": 1e-2},
        {"lr_init": 1e-2, "dropout_rate": 0.3, "cd_rate": 0.5, "kl_co_weight": 1e-2, "l2_ic_enc_scale": 1e-3},
    ],
}


@pytest.mark.parametrize("population", POPULATIONS.values(), ids=POPULATIONS.keys())
def test_population_members_equal_separate_runs(cfg, data, population):
    pop = Trainer(cfg, data, population=population, member_seeds=[0, 1])
    singles = [Trainer(cfg, data, population=[population[p]], member_seeds=[p]) for p in range(2)]
    for _ in range(2):
        metrics = pop.run_epoch()
        single_metrics = [single.run_epoch() for single in singles]
        for p in range(2):
            for name in ("loss", "val_nll_heldin", "val_loss", HELDIN_METRIC, ALL_METRIC):
                torch.testing.assert_close(
                    metrics[name][p : p + 1], single_metrics[p][name], rtol=1e-5, atol=1e-7, msg=name
                )
    for p in range(2):
        assert_member_equal(pop, p, singles[p], exact=False)
        for ours, theirs in zip(pop.optimizer.exp_avg_sq, singles[p].optimizer.exp_avg_sq):
            torch.testing.assert_close(ours[p : p + 1], theirs, rtol=1e-4, atol=1e-12)
    assert pop.optimizer.steps.tolist() == [4.0, 4.0]  # 40 trials / batches of 16 = 2 full steps per epoch


def test_learning_rate_changes_the_run(cfg, data):
    """Same seed for both members, different learning rates: same start, different weights."""
    pop = Trainer(cfg, data, population=POPULATIONS["lr"], member_seeds=[0, 0])
    start = params_snapshot(pop)
    assert all(torch.equal(w[0], w[1]) for w in start)
    pop.run_epoch()
    pop.run_epoch()
    moved = [sum(float((p.detach()[m] - s[m]).abs().sum()) for p, s in zip(pop.params, start)) for m in range(2)]
    assert moved[1] > 3 * moved[0] > 0  # lr 1e-2 moves the weights much further than lr 1e-3


# ============================================================================ learning


def test_loss_decreases_on_learnable_data():
    cfg = config(model=dict(dropout_rate=0.05, cd_rate=0.2), train=dict(lr_init=1e-2))
    data = make_data(cfg.model, n_train=48, n_valid=16, seed=3, learnable=True)
    trainer = Trainer(cfg, data, member_seeds=[0])
    history = [trainer.run_epoch() for _ in range(20)]
    first, last = history[0], history[-1]
    assert last["val_nll_heldin"].item() < first["val_nll_heldin"].item() - 0.05
    assert last["recon"].item() < first["recon"].item()
    assert last["val_bps"].item() > first["val_bps"].item()
    assert last["val_r2"].item() > first["val_r2"].item() + 0.1
    assert last[ALL_METRIC].item() < history[1][ALL_METRIC].item()


# ============================================================================ metrics


TRAIN_KEYS = {"loss", "recon", "nll_heldin", "kl_ic", "kl_co", "l2", "grad_norm", "kl_ramp", "l2_ramp", "lr"}


VAL_KEYS = {
    "val_recon",
    "val_kl_ic",
    "val_kl_co",
    "val_nll_heldin",
    "val_r2",
    "val_loss",
    HELDIN_METRIC,
    ALL_METRIC,
    "improved",
}


@pytest.mark.parametrize(
    ("model", "extra", "absent"),
    [
        (dict(), {"val_nll_heldout", "val_nll_fp", "val_bps", "val_co_bps", "val_fp_bps"}, set()),
        (dict(cs_dim=0, fp_len=0), {"val_bps"}, {"val_nll_heldout", "val_nll_fp", "val_co_bps", "val_fp_bps"}),
        (dict(fp_len=0), {"val_nll_heldout", "val_co_bps", "val_bps"}, {"val_nll_fp", "val_fp_bps"}),
        (dict(sv_rate=0.2), {"val_sv_nll", "val_co_bps", "val_fp_bps"}, {"val_bps"}),
    ],
)
def test_metric_keys_and_shapes(model, extra, absent):
    cfg = config(model=model)
    trainer = Trainer(cfg, make_data(cfg.model, n_train=20, n_valid=8), population=[{}, {}, {}], member_seeds=[0, 1, 2])
    metrics = trainer.run_epoch()
    assert TRAIN_KEYS | VAL_KEYS | extra <= set(metrics)
    assert not (absent & set(metrics))
    for name, value in metrics.items():
        assert value.shape == (3,), name
        assert torch.all(torch.isfinite(value)), name
    assert torch.equal(metrics["kl_ramp"], torch.full((3,), 1 / 3)) and torch.equal(
        metrics["l2_ramp"], torch.full((3,), 1 / 3)
    )
    assert len(trainer.history) == 3 and {row["member"] for row in trainer.history} == {0, 1, 2}


# ============================================================================ state round trips


def test_state_round_trip_then_one_epoch_is_bit_identical(cfg, data, tmp_path):
    population = POPULATIONS["lr"]
    uninterrupted = Trainer(cfg, data, population=population, member_seeds=[0, 1])
    for _ in range(2):
        uninterrupted.run_epoch()
    path = tmp_path / "last.ckpt"
    save_checkpoint(uninterrupted.population_state().to_dict(), path)  # weights_only round trip, as a resume does
    state = PopulationState.from_dict(load_checkpoint(path))

    resumed = Trainer(cfg, data, population=population, member_seeds=[0, 1])
    resumed.load_population_state(state)
    assert resumed.epoch == 2 and torch.equal(resumed.smth_metric, uninterrupted.smth_metric)
    want = uninterrupted.run_epoch()
    got = resumed.run_epoch()
    for a, b in zip(uninterrupted.params, resumed.params):
        assert torch.equal(a, b)
    for a, b in zip(
        uninterrupted.optimizer.exp_avg + uninterrupted.optimizer.exp_avg_sq,
        resumed.optimizer.exp_avg + resumed.optimizer.exp_avg_sq,
    ):
        assert torch.equal(a, b)
    for name, value in want.items():
        assert torch.equal(value, got[name]), name
    assert resumed.history == uninterrupted.history and resumed.epoch == 3


def test_set_hparams_applies_after_state_load(cfg, data):
    source = Trainer(cfg, data, population=[{"lr_init": 1e-3}, {"lr_init": 1e-3}], member_seeds=[0, 1])
    source.run_epoch()
    state = copy.deepcopy(source.population_state())
    # a trainer built with other learning rates: loading the state restores the saved ones ...
    target = Trainer(cfg, data, population=[{"lr_init": 5e-3}, {"lr_init": 5e-3}], member_seeds=[0, 1])
    target.load_population_state(state)
    torch.testing.assert_close(target.lr, torch.tensor([1e-3, 1e-3]))
    # ... and hyperparameters set afterwards stick
    set_member_hparams(target, 1, {"lr_init": 1e-2, "cd_rate": 0.1})
    torch.testing.assert_close(target.lr, torch.tensor([1e-3, 1e-2]))
    assert target.members[1]["lr_init"] == pytest.approx(1e-2)
    assert target.members[1]["cd_rate"] == pytest.approx(0.1)
    assert target.members[0]["cd_rate"] == pytest.approx(cfg.model.cd_rate)
    metrics = target.run_epoch()
    torch.testing.assert_close(metrics["lr"], torch.tensor([1e-3, 1e-2]))
    source.run_epoch()
    assert_member_equal(target, 0, source, q=0)  # the untouched member continues exactly
    assert not torch.equal(target.model.decoder.gen_cell.weight_hh[1], source.model.decoder.gen_cell.weight_hh[1])
    # the perturbed member equals a single run given the same change at the same point
    single = Trainer(cfg, data, population=[{"lr_init": 1e-3}], member_seeds=[1])
    single.run_epoch()
    set_member_hparams(single, 0, {"lr_init": 1e-2, "cd_rate": 0.1})
    single.run_epoch()
    assert_member_equal(target, 1, single, exact=False)


def test_set_hparams_validates(cfg, data):
    state = Trainer(cfg, data, population=[{}, {}], member_seeds=[0, 1]).population_state()
    before = state.hparams[1]
    with pytest.raises(ConfigError, match="cd_rate"):
        state.set_hparams(1, {"cd_rate": 1.5}, cfg)
    with pytest.raises(KeyError):
        state.set_hparams(1, {"batch_size": 3}, cfg)
    assert state.hparams[1] == before


def test_invalid_member_hparams_raise_config_error(cfg, data):
    with pytest.raises(ConfigError, match="cd_rate"):
        Trainer(cfg, data, population=[{"cd_rate": 1.5}], member_seeds=[0])
    trainer = Trainer(cfg, data, population=[{}], member_seeds=[0])
    with pytest.raises(ConfigError, match="lr_init"):
        set_member_hparams(trainer, 0, {"lr_init": -1.0})


def test_loaded_state_is_not_aliased(cfg, data):
    """PBT copies one state into several trainers and perturbs each: the copies must not share tensors."""
    source = Trainer(cfg, data, population=[{"lr_init": 1e-3}, {"lr_init": 1e-3}], member_seeds=[0, 1])
    state = source.population_state()
    first = Trainer(cfg, data, population=[{}, {}], member_seeds=[0, 1])
    second = Trainer(cfg, data, population=[{}, {}], member_seeds=[0, 1])
    first.load_population_state(state)
    second.load_population_state(state)
    set_member_hparams(first, 0, {"lr_init": 5e-2, "cd_rate": 0.1})  # a PBT perturbation of one copy
    assert second.lr[0].item() == pytest.approx(1e-3)
    assert second.members[0]["cd_rate"] == pytest.approx(cfg.model.cd_rate)
    assert source.lr[0].item() == pytest.approx(1e-3)
    # and a state is a snapshot of the training state: the source moving on does not change it
    set_member_hparams(source, 1, {"lr_init": 2e-2})
    source.stopped[0] = True
    assert state.trainer["lr"].tolist() == pytest.approx([1e-3, 1e-3]) and not state.trainer["stopped"].any()


# ============================================================================ divergence and stopping


def test_diverged_member_is_frozen_and_the_other_trains_on(cfg, data):
    pop = Trainer(cfg, data, population=POPULATIONS["lr"], member_seeds=[0, 1])
    single = Trainer(cfg, data, population=[POPULATIONS["lr"][1]], member_seeds=[1])
    pop.run_epoch()
    single.run_epoch()
    with torch.no_grad():
        pop.model.readout[0].bias[0, 0] = math.nan
    before = params_snapshot(pop)
    moments = [t.clone() for t in pop.optimizer.exp_avg + pop.optimizer.exp_avg_sq]
    metrics = pop.run_epoch()
    single.run_epoch()
    assert pop.diverged.tolist() == [True, False]
    for param, old in zip(pop.params, before):
        torch.testing.assert_close(param[0], old[0], equal_nan=True, atol=0, rtol=0)
    for t, old in zip(pop.optimizer.exp_avg + pop.optimizer.exp_avg_sq, moments):
        assert torch.equal(t[0], old[0])
    assert pop.optimizer.steps.tolist() == [2.0, 4.0]
    assert_member_equal(pop, 1, single, exact=False)  # member 1 is untouched by member 0's NaNs
    assert math.isnan(metrics[ALL_METRIC][0].item()) and math.isfinite(metrics[ALL_METRIC][1].item())
    pop.run_epoch()  # and the run goes on
    assert pop.diverged.tolist() == [True, False] and pop.epoch == 3


def _stub_epochs(trainer: Trainer, values: list[list[float]]):
    """Replace training and validation by a scripted validation NLL per epoch and member (held-in and every
    neuron alike)."""
    script = iter(values)
    trainer.train_epoch = lambda: {}

    def evaluate(split_name: str) -> dict[str, torch.Tensor]:
        nll = torch.tensor(next(script))
        return {"val_nll_heldin": nll, "val_recon": nll}

    trainer.evaluate = evaluate


def test_early_stopping_only_after_the_ramps(data):
    # KL ramp over epochs 0..3 (complete at epoch 3), L2 ramp over 0..2: ramps end at epoch 3
    cfg = config(train=dict(kl_increase_epoch=3, l2_increase_epoch=2, patience=2))
    trainer = Trainer(cfg, data, population=[{}, {}], member_seeds=[0, 1])
    assert trainer.ramp_end_epoch == 3
    # member 0 keeps improving; member 1 never does (not even before the ramps end)
    _stub_epochs(trainer, [[10.0 - epoch, 5.0] for epoch in range(8)])
    stopped, improved = [], []
    for _ in range(8):
        metrics = trainer.run_epoch()
        stopped.append(trainer.stopped.tolist())
        improved.append(metrics["improved"].tolist())
    # nothing counts before epoch 3; member 1's first (only) best is epoch 3; 4 and 5 are without progress
    assert [row[1] for row in improved] == [0, 0, 0, 1, 0, 0, 0, 0]
    assert [row[0] for row in improved] == [0, 0, 0, 1, 1, 1, 1, 1]
    assert [row[1] for row in stopped] == [False] * 5 + [True] * 3
    assert [row[0] for row in stopped] == [False] * 8
    assert trainer.best_epoch.tolist() == [7, 3]
    assert trainer.best_metric[1].item() == 5.0


def test_learning_rate_schedule_decays_on_plateau_and_stops(data):
    cfg = config(train=dict(lr_schedule=True, lr_patience=2, lr_decay=0.5, lr_init=1e-3, lr_stop=2e-4))
    trainer = Trainer(cfg, data, population=[{}, {}], member_seeds=[0, 1])
    _stub_epochs(trainer, [[10.0 - epoch, 5.0] for epoch in range(10)])
    lrs = []
    for _ in range(10):
        trainer.run_epoch()
        lrs.append(trainer.lr.tolist())
    # member 1: epoch 0 sets the best, epochs 1-3 do not improve: the third bad epoch exceeds the patience of
    # 2 -> halve after epoch 3, again after 6 and 9
    want = [1e-3] * 3 + [5e-4] * 3 + [2.5e-4] * 3 + [1.25e-4]
    assert [row[1] for row in lrs] == pytest.approx(want)
    assert [row[0] for row in lrs] == pytest.approx([1e-3] * 10)
    assert trainer.stopped.tolist() == [False, True]  # 1.25e-4 < lr_stop


@pytest.mark.parametrize("patience", [0, 1, 2])
def test_learning_rate_schedule_matches_torch_reduce_lr_on_plateau(data, patience):
    """The plateau rule is torch.optim.lr_scheduler.ReduceLROnPlateau (mode min, threshold 0, as lfads-torch
    configures it) fed the smoothed validation NLL, member by member; NaN counts as a bad epoch."""
    values = [
        [5.0, 9.0],
        [4.0, 9.0],
        [4.5, 8.0],
        [4.2, 8.0],
        [4.1, math.nan],
        [3.9, 8.5],
        [3.9, 7.0],
        [4.0, 7.5],
        [4.3, 7.2],
        [3.8, 7.9],
        [3.8, 8.1],
        [3.9, 6.9],
    ]
    cfg = config(train=dict(lr_schedule=True, lr_patience=patience, lr_decay=0.5, lr_init=1e-3, lr_stop=0.0))
    trainer = Trainer(cfg, data, population=[{}, {}], member_seeds=[0, 1])
    _stub_epochs(trainer, values)
    oracles = []
    for _ in range(2):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
        oracles.append(
            (
                optimizer,
                torch.optim.lr_scheduler.ReduceLROnPlateau(
                    optimizer, mode="min", factor=0.5, patience=patience, threshold=0.0
                ),
            )
        )
    for _ in values:
        smoothed = trainer.run_epoch()[ALL_METRIC]  # the default train.select_metric
        for member, (optimizer, scheduler) in enumerate(oracles):
            scheduler.step(float(smoothed[member]))
            assert trainer.lr[member].item() == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-6)
    assert trainer.lr.tolist() != [1e-3, 1e-3]  # the script does make it decay


def test_lfads_tf2_learning_rate_rule(data):
    """lr_rule lfads_tf2, by hand: ramps end at epoch 3, patience 2, so decisions start at epoch 5; decay when the
    raw val_loss exceeds the worst of the 2 epochs before, at most every 2 epochs; the rate stops at lr_stop and
    training stops after an epoch at lr_stop."""
    cfg = config(
        train=dict(
            lr_schedule=True,
            lr_rule="lfads_tf2",
            lr_patience=2,
            lr_decay=0.5,
            lr_init=1e-3,
            lr_stop=2e-4,
            kl_increase_epoch=3,
            l2_increase_epoch=2,
        )
    )
    trainer = Trainer(cfg, data, population=[{}, {}, {}], member_seeds=[0, 1, 2])
    assert trainer.ramp_end_epoch == 3
    worse = [float(e) for e in range(12)]  # worse every epoch
    better = [12.0 - e for e in range(12)]  # better every epoch: never decays
    bump = [5.0, 5.0, 5.0, 5.0, 5.0, 9.0, 6.0, 7.0, 9.5, 9.0, 9.0, 9.0]  # 7 < 9 at epoch 7; 9.5 > 7 at epoch 8
    script = iter(zip(worse, better, bump, strict=True))
    trainer.train_epoch = lambda: {}
    trainer.evaluate = lambda split_name: dict.fromkeys(
        ("val_loss", "val_nll_heldin", "val_recon"), torch.tensor(next(script))
    )
    lrs, stopped = [], []
    for _ in range(12):
        trainer.run_epoch()
        lrs.append(trainer.lr.tolist())
        stopped.append(trainer.stopped.tolist())
    # worse: decays after epochs 5 (6 > 5), 7 (8 > 7), 9 (to 1.25e-4, floored at 2e-4); epoch 10 trains at lr_stop
    assert [row[0] for row in lrs] == pytest.approx([1e-3] * 5 + [5e-4] * 2 + [2.5e-4] * 2 + [2e-4] * 3)
    assert [row[0] for row in stopped] == [False] * 10 + [True] * 2
    assert [row[1] for row in lrs] == pytest.approx([1e-3] * 12)
    # bump: epoch 5 (9 > 5) decays; 6 too soon; 7 (7 < 9) not; 8 (9.5 > 7) decays; 9 too soon; 10, 11 (9 < 9.5) not
    assert [row[2] for row in lrs] == pytest.approx([1e-3] * 5 + [5e-4] * 3 + [2.5e-4] * 4)


def test_weight_decay_ramps_with_the_l2_penalty(data):
    """AdamW's decay is train.weight_decay x the L2 ramp, step by step (lfads-torch's on_before_optimizer_step)."""
    trainer = Trainer(config(train=dict(weight_decay=0.3, l2_start_epoch=1, l2_increase_epoch=2)), data)
    seen = []
    step = trainer.optimizer.step

    def spy(lr, active):
        seen.append(trainer.optimizer.weight_decay)
        step(lr, active)

    trainer.optimizer.step = spy
    for _ in range(5):
        trainer.run_epoch()
    # L2 ramp: 0 at epoch 0, then 1/3, 2/3, 1, 1; two steps per epoch
    assert seen == pytest.approx([0.0] * 2 + [0.1] * 2 + [0.2] * 2 + [0.3] * 4)
