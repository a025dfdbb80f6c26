"""Gamma / zero-inflated Gamma observation models, SBTT, temporal shift and spike jitter (issue 8, parts 3-4)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy import stats

from autolfads.data.dataset import LFADSData, Split, load_data
from autolfads.errors import ConfigError, DataError
from autolfads.model import LFADS
from autolfads.model.augmentations import sbtt_targets, spike_jitter, temporal_shift
from autolfads.model.population import MemberRNG
from autolfads.model.reconstruction import RECONSTRUCTIONS, Gamma, ZeroInflatedGamma, make_reconstruction
from autolfads.names import OBSERVATION_MODELS
from autolfads.train.objective import reconstruction_loss
from autolfads.train.trainer import Trainer
from helpers import config, make_data, model_config


def test_one_list_of_observation_models():
    """names.OBSERVATION_MODELS is the config's choice, the model's distributions and the data's value rules."""
    from typing import get_args

    from autolfads.config import ModelConfig
    from autolfads.data.hdf5 import _VALUE_RULES

    assert get_args(ModelConfig.model_fields["reconstruction"].annotation) == OBSERVATION_MODELS
    assert tuple(RECONSTRUCTIONS) == OBSERVATION_MODELS
    assert tuple(_VALUE_RULES) == OBSERVATION_MODELS


# ============================================================================ likelihoods against scipy


def test_gamma_nll_matches_scipy():
    rng = np.random.default_rng(0)
    params = torch.from_numpy(rng.normal(size=(4, 5, 2)))
    target = torch.from_numpy(rng.gamma(2.0, 0.7, size=(4, 5)))
    alpha, beta = np.exp(params[..., 0].numpy()), np.exp(params[..., 1].numpy())
    expected = -stats.gamma.logpdf(target.numpy(), a=alpha, scale=1 / beta)
    np.testing.assert_allclose(Gamma().nll(params, target).numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(Gamma().mean(params).numpy(), stats.gamma.mean(a=alpha, scale=1 / beta), rtol=1e-12)


@pytest.mark.parametrize("s_min", [0.0, 0.3])
def test_zig_nll_matches_the_mixture_by_hand(s_min):
    rng = np.random.default_rng(1)
    params = torch.from_numpy(rng.normal(size=(6, 7, 3)))
    events = s_min + rng.gamma(1.5, 0.5, size=(6, 7))
    target = np.where(rng.uniform(size=(6, 7)) < 0.4, 0.0, events)
    alpha, beta = np.exp(params[..., 0].numpy()), np.exp(params[..., 1].numpy())
    q = 1 / (1 + np.exp(-params[..., 2].numpy()))
    density = q * stats.gamma.pdf(target, a=alpha, loc=s_min, scale=1 / beta)
    expected = -np.log(np.where(target == 0, 1 - q, density))
    zig = ZeroInflatedGamma(s_min)
    np.testing.assert_allclose(zig.nll(params, torch.from_numpy(target)).numpy(), expected, rtol=1e-9)
    mean = q * stats.gamma.mean(a=alpha, loc=s_min, scale=1 / beta)
    np.testing.assert_allclose(zig.mean(params).numpy(), mean, rtol=1e-12)


def test_zig_is_stable_for_extreme_logits():
    params = torch.tensor([[0.0, 0.0, 60.0], [0.0, 0.0, -60.0]])
    nll = ZeroInflatedGamma().nll(params, torch.tensor([0.0, 1.0]))
    assert torch.isfinite(nll).all()
    np.testing.assert_allclose(nll.numpy(), [60.0, 61.0], rtol=1e-6)  # -log(1-q) ~ 60; -log q ~ 60 plus Gamma(1,1) at 1


@pytest.mark.parametrize("name, s_min", [("gamma", 0.0), ("zig", 0.2)])
def test_readout_init_gives_finite_rates_and_loss(name, s_min):
    cfg = model_config(reconstruction=name, zig_s_min=s_min)
    assert make_reconstruction(cfg).n_params == (2 if name == "gamma" else 3)
    model = LFADS(cfg, [0, 1])
    out = model(torch.rand(5, cfg.encod_seq_len, cfg.encod_dim), torch.zeros(2))
    assert out.output_params.shape == (2, 5, cfg.recon_seq_len, cfg.recon_dim, model.reconstruction.n_params)
    assert torch.isfinite(out.rates).all() and (out.rates > 0).all()
    nll = model.reconstruction.nll(out.output_params, torch.rand(5, cfg.recon_seq_len, cfg.recon_dim) + 0.1)
    assert torch.isfinite(nll).all()


def gamma_data(cfg, n_train=48, n_valid=16, seed=3, zeros=0.0) -> LFADSData:
    """Gamma-distributed observations (shape 3) around smooth per-trial means; `zeros` of them set to 0."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(2, cfg.recon_dim))
    times = np.linspace(0, 2 * np.pi, cfg.recon_seq_len)
    splits = {}
    for name, n in (("train", n_train), ("valid", n_valid)):
        phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
        latents = np.stack([np.sin(times + phase), np.cos(2 * times + phase)], -1)
        means = np.exp(0.3 + 1.0 * np.tanh(latents @ loadings))
        values = rng.gamma(3.0, means / 3.0)
        values[rng.uniform(size=values.shape) < zeros] = 0.0
        recon = torch.from_numpy(values.astype(np.float32))
        encod = recon[:, : cfg.encod_seq_len, : cfg.encod_dim].clone()
        splits[name] = Split(name, encod, recon, None, torch.from_numpy(means.astype(np.float32)), np.arange(n))
    return LFADSData(Path("in-memory"), "encod_recon", splits["train"], splits["valid"], None, None)


@pytest.mark.parametrize("name, zeros", [("gamma", 0.0), ("zig", 0.3)])
def test_training_on_gamma_data_lowers_the_loss(name, zeros):
    cfg = config(model=dict(reconstruction=name, dropout_rate=0.05, cd_rate=0.2), train=dict(lr_init=1e-2))
    trainer = Trainer(cfg, gamma_data(cfg.model, zeros=zeros), member_seeds=[0])
    history = [trainer.run_epoch() for _ in range(15)]
    assert history[-1]["val_nll_heldin"].item() < history[0]["val_nll_heldin"].item() - 0.05
    assert history[-1]["recon"].item() < history[0]["recon"].item()
    assert all(torch.isfinite(row["loss"]).all() for row in history)
    assert not any(key.endswith("bps") for key in history[-1])  # bits/spike are Poisson-only


# ============================================================================ data validation


def write(path, train, valid):
    with h5py.File(path, "w") as h5:
        h5["train_data"], h5["valid_data"] = train, valid
    return path


def test_gamma_data_with_zero_suggests_zig(tmp_path):
    good = np.full((3, 4, 2), 0.5)
    bad = good.copy()
    bad[1, 2, 0] = 0.0
    path = write(tmp_path / "d.h5", bad, good)
    with pytest.raises(
        DataError, match=r"positive values for gamma.*train_data\[1, 2, 0\] = 0.0.*use model.reconstruction zig"
    ):
        load_data(path, reconstruction="gamma")
    assert load_data(path, reconstruction="zig").train.recon[1, 2, 0] == 0
    negative = good.copy()
    negative[0, 0, 1] = -0.1
    with pytest.raises(DataError, match=r"non-negative values for zig"):
        load_data(write(tmp_path / "n.h5", negative, good), reconstruction="zig")
    with pytest.raises(DataError, match=r"positive values for gamma") as err:
        load_data(tmp_path / "n.h5", reconstruction="gamma")
    assert "zig" not in str(err.value)  # a negative value is not fixed by ZIG


def test_nan_needs_sbtt_and_inf_is_never_allowed(tmp_path):
    data = np.ones((3, 4, 2))
    data[0, 1, 1] = np.nan
    path = write(tmp_path / "d.h5", data, np.ones((3, 4, 2)))
    with pytest.raises(DataError, match=r"'train_data' holds 1 NaN values .*train.sbtt"):
        load_data(path)
    loaded = load_data(path, allow_nan=True)
    assert torch.isnan(loaded.train.recon[0, 1, 1]) and loaded.train.encod[0, 1, 1] == 0
    data[0, 2, 0] = np.inf
    path = write(tmp_path / "i.h5", data, np.ones((3, 4, 2)))
    with pytest.raises(DataError, match=r"2 NaN or infinite values \(1 infinite: Inf is never allowed"):
        load_data(path, allow_nan=True)


def test_config_accepts_the_new_keys():
    cfg = config(
        model=dict(
            reconstruction="zig", zig_s_min=0.1, temporal_shift_std=2.0, temporal_shift_max=3, spike_jitter_width=1
        ),
        train=dict(sbtt=True),
    )
    assert cfg.model.reconstruction == "zig" and cfg.train.sbtt
    with pytest.raises(ConfigError):
        cfg.model.reconstruction = "lognormal"


# ============================================================================ SBTT


def test_sbtt_mask_is_a_no_op_without_missing_bins_and_reweights_with_them():
    rng = np.random.default_rng(2)
    params = torch.from_numpy(rng.normal(size=(2, 3, 5, 4, 1)))
    target = torch.from_numpy(rng.poisson(2.0, size=(3, 5, 4)).astype(np.float64))
    recon = make_reconstruction(model_config())
    full = reconstruction_loss(recon.nll(params, target))
    filled, weight = sbtt_targets(target)
    assert weight is None and filled is target
    missing = target.clone()
    missing[0, 1, 2] = missing[2, 4, 0] = missing[1, 0, 3] = float("nan")
    filled, weight = sbtt_targets(missing)
    assert not torch.isnan(filled).any()
    masked = reconstruction_loss(recon.nll(params, filled) * weight)
    observed = ~torch.isnan(missing)
    nll = recon.nll(params, target)
    by_hand = (nll * observed).sum((1, 2, 3)) / observed.sum()
    torch.testing.assert_close(masked, by_hand)
    fraction_missing = 3 / missing.numel()
    torch.testing.assert_close(masked, (nll * observed).mean((1, 2, 3)) / (1 - fraction_missing))
    assert not torch.allclose(masked, full)


def test_sbtt_training_ignores_missing_bins():
    cfg = config(model=dict(dropout_rate=0.05, cd_rate=0.2), train=dict(lr_init=1e-2, sbtt=True))
    data = make_data(cfg.model, n_train=32, n_valid=8, seed=3, learnable=True)
    holes = torch.rand(data.train.recon.shape, generator=torch.Generator().manual_seed(0)) < 0.2
    data.train.recon[holes] = float("nan")
    data.train.encod.copy_(torch.nan_to_num(data.train.recon[:, : cfg.model.encod_seq_len, : cfg.model.encod_dim]))
    trainer = Trainer(cfg, data, member_seeds=[0])
    params = [p.detach().clone() for p in trainer.params]
    history = [trainer.run_epoch() for _ in range(8)]
    assert all(torch.isfinite(row["loss"]).all() and torch.isfinite(row["val_loss"]).all() for row in history)
    assert all(torch.isfinite(p).all() for p in trainer.params)
    assert any(not torch.equal(a, b) for a, b in zip(params, trainer.params))
    assert history[-1]["val_nll_heldin"].item() < history[0]["val_nll_heldin"].item()
    assert torch.isfinite(history[-1]["val_bps"]).all()  # bits/spike over the observed bins only
    metrics = trainer.evaluate("train")
    assert torch.isfinite(metrics["train_bps"]).all() and torch.isfinite(metrics["train_recon"]).all()


# ============================================================================ temporal shift and spike jitter


def counts(seed=0, shape=(4, 10, 3)):
    return torch.from_numpy(np.random.default_rng(seed).poisson(1.5, size=shape).astype(np.float32))


def test_spike_jitter_preserves_counts_and_is_seeded_and_member_independent():
    data = counts()
    jittered = spike_jitter(data, 2, MemberRNG([5, 6]))
    assert jittered.shape == (2, *data.shape)
    torch.testing.assert_close(jittered.sum(2), data.sum(1).expand(2, -1, -1))  # per trial and neuron
    assert not torch.equal(jittered[0], data) and not torch.equal(jittered[0], jittered[1])
    torch.testing.assert_close(spike_jitter(data, 2, MemberRNG([5, 6])), jittered)  # deterministic under a seed
    torch.testing.assert_close(spike_jitter(data, 2, MemberRNG([6]))[0], jittered[1])  # member-independent
    torch.testing.assert_close(spike_jitter(data, 0, MemberRNG([5]))[0], data)
    assert (jittered - data).abs().max() > 0 and (jittered >= 0).all()


def test_spike_jitter_moves_spikes_at_most_width_bins():
    data = torch.zeros(1, 20, 1)
    data[0, 10, 0] = 50
    out = spike_jitter(data, 2, MemberRNG([0]))[0, 0, :, 0]
    assert out.sum() == 50 and out[:8].sum() == 0 and out[13:].sum() == 0 and (out[8:13] > 0).sum() >= 3


def test_temporal_shift_keeps_shapes_and_shifts_each_trial_neuron():
    data = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(2, 8, 3)
    shifted = temporal_shift(data, 2.0, 2, MemberRNG([1, 2]))
    assert shifted.shape == (2, *data.shape)
    for p in range(2):
        for b in range(2):
            for n in range(3):
                series, original = shifted[p, b, :, n], data[b, :, n]
                candidates = [
                    torch.cat([original[:1].repeat(s), original[: 8 - s]])
                    if s >= 0
                    else torch.cat([original[-s:], original[-1:].repeat(-s)])
                    for s in range(-2, 3)
                ]
                assert any(torch.equal(series, c) for c in candidates)
    torch.testing.assert_close(temporal_shift(data, 2.0, 2, MemberRNG([1, 2])), shifted)
    torch.testing.assert_close(temporal_shift(data, 2.0, 2, MemberRNG([2]))[0], shifted[1])
    assert not torch.equal(shifted[0], shifted[1])
    torch.testing.assert_close(temporal_shift(data, 0.0, 2, MemberRNG([1]))[0], data)


def test_trainer_with_augmentations_runs_and_members_stay_independent():
    model = dict(temporal_shift_std=1.0, temporal_shift_max=2, spike_jitter_width=1, dropout_rate=0.05, cd_rate=0.2)
    cfg = config(model=model, train=dict(lr_init=1e-2))
    data = make_data(cfg.model, n_train=24, n_valid=8, seed=3, learnable=True)
    pop = Trainer(cfg, data, population=[{}, {"lr_init": 3e-3}], member_seeds=[0, 1])
    single = Trainer(cfg, data, population=[{"lr_init": 3e-3}], member_seeds=[1])
    for _ in range(2):
        pop.run_epoch()
        single.run_epoch()
    for (name, a), b in zip(pop.model.state_dict().items(), single.model.state_dict().values()):
        torch.testing.assert_close(a[1:], b, rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(ConfigError, match="spike counts"):
        Trainer(
            config(model=dict(reconstruction="gamma", spike_jitter_width=1)),
            gamma_data(model_config(reconstruction="gamma")),
        )
