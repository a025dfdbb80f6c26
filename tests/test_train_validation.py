"""train/validation.py: the validation metrics of an epoch worked out by hand (every region's NLL and bits
per spike, the controller KL, R^2, the selection scores and their smoothing), the sampled metric, the
ic-only bins, and validation in large batches scoring as small ones do."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from autolfads.names import ALL_METRIC, HELDIN_METRIC, SAMPLED_METRIC
from autolfads.train import validation
from autolfads.train.trainer import Trainer
from autolfads.train.validation import MIN_VALID_BATCH
from helpers import ar_kl_by_hand, config, make_data


@pytest.fixture(scope="module")
def cfg():
    return config()


@pytest.fixture(scope="module")
def data(cfg):
    return make_data(cfg.model)


def test_validation_metrics_by_hand(cfg, data):
    trainer = Trainer(cfg, data, population=[{}, {"lr_init": 1e-2}], member_seeds=[4, 5])
    first = trainer.run_epoch()
    # after run_epoch the weights are those evaluate() used
    valid = data.valid
    trainer.model.eval()
    with torch.no_grad():
        out = trainer.model(valid.encod, torch.zeros(2))
    rates = out.rates.double()
    counts = valid.recon.double()
    nll = rates - counts * rates.log()  # Poisson NLL without log k!
    T, N = cfg.model.encod_seq_len, cfg.model.encod_dim
    regions = {
        "heldin": (slice(0, T), slice(0, N), ""),
        "heldout": (slice(0, T), slice(N, None), "co_"),
        "fp": (slice(T, None), slice(None), "fp_"),
    }
    for name, (bins, neurons, bps_prefix) in regions.items():
        region_nll = nll[:, :, bins, neurons]
        torch.testing.assert_close(first[f"val_nll_{name}"].double(), region_nll.mean((1, 2, 3)), rtol=1e-5, atol=0)
        region_counts = counts[:, bins, neurons]
        null_rate = region_counts.mean((0, 1))  # each neuron's mean count over trials and bins
        null = (null_rate - region_counts * null_rate.log()).sum()
        bps = (null - region_nll.sum((1, 2, 3))) / (region_counts.sum() * math.log(2))
        torch.testing.assert_close(first[f"val_{bps_prefix}bps"].double(), bps, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first["val_recon"].double(), nll.mean((1, 2, 3)), rtol=1e-5, atol=0)
    # the controller-output KL: the exact KL of the posterior-mean pass's q against the AR(1) prior, never negative
    prior = trainer.model.co_prior
    tau, nvar = prior.log_tau.detach().exp().double().numpy(), prior.log_nvar.detach().exp().double().numpy()
    kl_co = ar_kl_by_hand(out.states.co_means.double().numpy(), out.states.co_stds.double().numpy(), tau, nvar).mean(-1)
    np.testing.assert_allclose(first["val_kl_co"].double().numpy(), kl_co, rtol=1e-4)
    assert (first["val_kl_co"] > 0).all()
    truth = valid.truth.double()
    ss_res = (rates - truth).square().sum((1, 2))
    ss_tot = (truth - truth.mean((0, 1))).square().sum((0, 1))
    torch.testing.assert_close(first["val_r2"].double(), (1 - ss_res / ss_tot).mean(-1), rtol=1e-4, atol=1e-5)
    # smoothing: the first value is taken as is, then 0.3 previous + 0.7 current; the all-neuron score smooths
    # val_recon, every neuron and bin
    second = trainer.run_epoch()
    for metric, raw in ((HELDIN_METRIC, "val_nll_heldin"), (ALL_METRIC, "val_recon")):
        assert torch.equal(first[metric], first[raw])
        torch.testing.assert_close(second[metric], 0.3 * first[metric] + 0.7 * second[raw])
    assert not torch.allclose(first[ALL_METRIC], first[HELDIN_METRIC])  # held-out neurons and forward bins count


def test_without_held_out_neurons_or_forward_bins_both_selection_scores_are_one(data):
    """No held-out neurons, no forward bins: every reconstructed entry is a held-in one, so the all-neuron score
    is the held-in score exactly, epoch by epoch: the mean Poisson NLL of the posterior means over all entries."""
    cfg = config(model=dict(cs_dim=0, fp_len=0))
    plain = make_data(cfg.model, n_train=20, n_valid=8, seed=2)
    trainer = Trainer(cfg, plain, population=[{}, {"lr_init": 1e-2}], member_seeds=[0, 1])
    for _ in range(3):
        metrics = trainer.run_epoch()
        assert torch.equal(metrics[ALL_METRIC], metrics[HELDIN_METRIC])
    trainer.model.eval()
    with torch.no_grad():
        rates = trainer.model(plain.valid.encod, torch.zeros(2)).rates.double()
    counts = plain.valid.recon.double()
    torch.testing.assert_close(metrics["val_recon"].double(), (rates - counts * rates.log()).mean((1, 2, 3)))
    torch.testing.assert_close(metrics["val_nll_heldin"], metrics["val_recon"], rtol=0, atol=0)


def test_sampled_validation_metric_is_every_bin_with_a_posterior_sample(cfg, data):
    """train.sampled_metric: val_recon_sampled is the mean NLL over every neuron and bin of one posterior-sampled
    pass (no dropout), smoothed like HELDIN_METRIC into SAMPLED_METRIC; off by default."""
    assert SAMPLED_METRIC not in Trainer(cfg, data).run_epoch()
    trainer = Trainer(config(train=dict(sampled_metric=True)), data, population=[{}, {}], member_seeds=[0, 1])
    trainer.train_epoch()
    state = trainer.model.rng.get_state()
    metrics = trainer.evaluate("valid")
    trainer.model.rng.set_state(state)  # the posterior-mean pass draws nothing: the same sample again
    with torch.no_grad():
        rates = trainer.model(data.valid.encod, torch.zeros(2), sample=True).rates.double()
    nll = rates - data.valid.recon.double() * rates.log()
    torch.testing.assert_close(metrics["val_recon_sampled"].double(), nll.mean((1, 2, 3)), rtol=1e-5, atol=0)
    assert not torch.allclose(metrics["val_recon_sampled"], metrics["val_recon"])
    first, second = trainer.run_epoch(), trainer.run_epoch()
    assert torch.equal(first[SAMPLED_METRIC], first["val_recon_sampled"])
    torch.testing.assert_close(second[SAMPLED_METRIC], 0.3 * first[SAMPLED_METRIC] + 0.7 * second["val_recon_sampled"])


@pytest.mark.parametrize("recon_ic_bins", [True, False])
def test_ic_only_bins_count_in_the_loss_unless_recon_ic_bins_is_false(cfg, data, recon_ic_bins):
    """recon_ic_bins false (lfads-tf2): the targets of the ic_enc_seq_len bins change neither training nor the
    validation NLLs, which average over the later bins."""
    ic_bins = 3
    other = copy.deepcopy(data)
    for split in (other.train, other.valid):
        split.recon[:, :ic_bins] = torch.flip(split.recon[:, :ic_bins], dims=[0]) + 1.0  # encoder inputs unchanged
    run = config(model=dict(ic_enc_seq_len=ic_bins, recon_ic_bins=recon_ic_bins))
    first, second = Trainer(run, data), Trainer(run, other)
    metrics = [first.run_epoch(), second.run_epoch()]
    same = all(torch.equal(a, b) for a, b in zip(first.params, second.params, strict=True))
    assert same is not recon_ic_bins
    first.model.eval()
    with torch.no_grad():
        rates = first.model(data.valid.encod, torch.zeros(1)).rates.double()
    nll = rates - data.valid.recon.double() * rates.log()
    start = 0 if recon_ic_bins else ic_bins
    T, N = run.model.encod_seq_len, run.model.encod_dim
    torch.testing.assert_close(
        metrics[0]["val_nll_heldin"].double(), nll[:, :, start:T, :N].mean((1, 2, 3)), rtol=1e-5, atol=0
    )
    torch.testing.assert_close(metrics[0]["val_recon"].double(), nll[:, :, start:].mean((1, 2, 3)), rtol=1e-5, atol=0)


def test_validation_runs_in_large_batches_and_scores_as_small_ones_do(monkeypatch):
    cfg = config(train={"batch_size": 4})
    data = make_data(cfg.model, n_valid=2 * MIN_VALID_BATCH + 3, learnable=True)
    trainer = Trainer(cfg, data, member_seeds=[0])
    trainer.run_epoch()
    forward, calls = type(trainer.model).forward, []

    def counted(self, *args, **kwargs):
        calls.append(args[0].shape[0])  # trials in this pass (encoder inputs are (B, T, N))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(trainer.model), "forward", counted)
    large = trainer.evaluate("valid")
    assert calls == [MIN_VALID_BATCH, MIN_VALID_BATCH, 3]
    calls.clear()
    monkeypatch.setattr(validation, "MIN_VALID_BATCH", 1)  # the training batch, 4, as before
    small = trainer.evaluate("valid")
    assert len(calls) == 65 and set(calls) == {4, 3}
    assert large.keys() == small.keys()
    for name, value in large.items():
        torch.testing.assert_close(value, small[name], rtol=1e-5, atol=1e-6, msg=name)
