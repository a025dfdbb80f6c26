"""model/reconstruction.py: the observation models. Poisson and Gaussian NLLs and means, Gamma and
zero-inflated Gamma against SciPy and by hand, the readout's init, training on Gamma data, and what each model
accepts as data and config (issue 8, parts 3-4)."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import gammaln

from autolfads.data.dataset import load_data
from autolfads.errors import ConfigError, DataError
from autolfads.model import LFADS
from autolfads.model.reconstruction import (
    RECONSTRUCTIONS,
    Gamma,
    Gaussian,
    Poisson,
    ZeroInflatedGamma,
    make_reconstruction,
)
from autolfads.names import OBSERVATION_MODELS
from autolfads.train.trainer import Trainer
from helpers import (
    config,
    gamma_data,
    model_config,
)

# ==================================================================================== 6. reconstructions


def test_poisson_nll_and_mean():
    rng = np.random.default_rng(0)
    log_rate = rng.normal(0.0, 1.0, size=(2, 3, 4, 5, 1))
    counts = rng.poisson(2.0, size=(2, 3, 4, 5)).astype(float)
    model = Poisson()
    assert model.n_params == 1 and RECONSTRUCTIONS["poisson"] is Poisson
    nll = model.nll(torch.tensor(log_rate), torch.tensor(counts)).numpy()
    np.testing.assert_allclose(nll, np.exp(log_rate[..., 0]) - counts * log_rate[..., 0], rtol=1e-12)
    # the same as scipy's log-pmf up to the data-only log k! term
    np.testing.assert_allclose(
        nll, -stats.poisson.logpmf(counts, np.exp(log_rate[..., 0])) - gammaln(counts + 1), rtol=1e-10, atol=1e-10
    )
    np.testing.assert_allclose(model.mean(torch.tensor(log_rate)).numpy(), np.exp(log_rate[..., 0]))
    # the references' NLL (torch's poisson_nll_loss with full=True, as lfads-torch; TensorFlow's log_poisson_loss
    # with compute_full_loss is the same formula) is ours plus Stirling's k log k - k + 0.5 log(2 pi k) for k > 1
    k = torch.tensor(counts)
    theirs = torch.nn.functional.poisson_nll_loss(
        torch.tensor(log_rate[..., 0]), k, log_input=True, full=True, reduction="none"
    )
    stirling = torch.where(k > 1, k * k.log() - k + 0.5 * torch.log(2 * math.pi * k), 0.0)
    np.testing.assert_allclose(theirs.numpy(), nll + stirling.numpy(), rtol=1e-10, atol=1e-10)


def test_gaussian_nll_and_mean():
    rng = np.random.default_rng(1)
    params = rng.normal(0.0, 1.0, size=(2, 3, 4, 5, 2))
    target = rng.normal(0.0, 2.0, size=(2, 3, 4, 5))
    model = Gaussian()
    assert model.n_params == 2
    nll = model.nll(torch.tensor(params), torch.tensor(target)).numpy()
    want = -stats.norm.logpdf(target, params[..., 0], np.exp(0.5 * params[..., 1]))
    np.testing.assert_allclose(nll, want, rtol=1e-10)
    np.testing.assert_allclose(model.mean(torch.tensor(params)).numpy(), params[..., 0])


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
