"""model/priors.py: the Gaussian and autoregressive (AR(1)) priors. Initial values, log densities and KLs in
closed form, by hand and by Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from autolfads.model import MemberRNG
from autolfads.model.priors import AutoregressivePrior, GaussianPrior
from helpers import ar_kl_by_hand

# ==================================================================================== 5. priors


def test_prior_initial_values():
    gp = GaussianPrior(MemberRNG([0, 1]), 3, 0.1)
    assert torch.equal(gp.mean, torch.zeros(2, 3))
    torch.testing.assert_close(gp.logvar, torch.full((2, 3), math.log(0.1)))
    assert not gp.logvar.requires_grad and "logvar" not in dict(gp.named_parameters())
    ar = AutoregressivePrior(MemberRNG([0]), 2, 10.0, 0.1)
    torch.testing.assert_close(ar.log_tau, torch.full((1, 2), math.log(10.0)))
    torch.testing.assert_close(ar.log_nvar, torch.full((1, 2), math.log(0.1)))


def test_gaussian_prior_kl_closed_form_and_monte_carlo():
    P, B, D = 2, 4, 3
    prior = GaussianPrior(MemberRNG([0, 1]), D, 0.1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        prior.mean.copy_(torch.randn(P, D, generator=g) * 0.3)
    post_mean = torch.randn(P, B, D, generator=g) * 0.4
    post_std = torch.rand(P, B, D, generator=g) * 0.4 + 0.1
    kl = prior.kl(post_mean, post_std).detach().numpy()
    assert kl.shape == (P,)
    mu_p, var_p = prior.mean.detach().double().numpy()[:, None], 0.1
    mu_q, sd_q = post_mean.double().numpy(), post_std.double().numpy()
    closed = 0.5 * (np.log(var_p / sd_q**2) + (sd_q**2 + (mu_q - mu_p) ** 2) / var_p - 1)
    np.testing.assert_allclose(kl, closed.sum(-1).mean(-1), rtol=1e-5)
    # Monte Carlo: E_q[log q - log p], summed over dims, averaged over the batch
    rng = np.random.default_rng(1)
    z = mu_q + sd_q * rng.standard_normal((200_000, P, B, D))
    log_ratio = stats.norm.logpdf(z, mu_q, sd_q) - stats.norm.logpdf(z, mu_p, math.sqrt(var_p))
    per_draw = log_ratio.sum(-1).mean(-1)  # (draws, P)
    stderr = per_draw.std(0) / math.sqrt(per_draw.shape[0])
    assert np.all(np.abs(per_draw.mean(0) - kl) < 4 * stderr)


def _ar_log_prob_by_hand(z, tau, nvar):
    """z (P, B, T, D); tau, nvar (P, D) -> (P, B) with scipy's normal log-densities."""
    alpha = np.exp(-1.0 / tau)[:, None, :]
    nvar = nvar[:, None, :]
    out = stats.norm.logpdf(z[:, :, 0], 0.0, np.sqrt(nvar / (1 - alpha**2))).sum(-1)
    for t in range(1, z.shape[2]):
        out += stats.norm.logpdf(z[:, :, t], alpha * z[:, :, t - 1], np.sqrt(nvar)).sum(-1)
    return out


def test_autoregressive_prior_log_prob_and_kl():
    P, B, T, D = 2, 3, 5, 2
    prior = AutoregressivePrior(MemberRNG([0, 1]), D, 10.0, 0.1)
    tau = np.array([[10.0, 3.0], [1.5, 25.0]])
    nvar = np.array([[0.1, 0.5], [0.05, 2.0]])
    with torch.no_grad():
        prior.log_tau.copy_(torch.tensor(np.log(tau)))
        prior.log_nvar.copy_(torch.tensor(np.log(nvar)))
    g = torch.Generator().manual_seed(2)
    z = torch.randn(P, B, T, D, generator=g)
    log_p = prior.log_prob(z)
    assert log_p.shape == (P, B)
    want = _ar_log_prob_by_hand(z.double().numpy(), tau, nvar)
    np.testing.assert_allclose(log_p.detach().numpy(), want, rtol=1e-5)
    # the stationary first step: with tau = 10, alpha = exp(-0.1), var = 0.1 / (1 - exp(-0.2)) = 0.5516...
    z1 = torch.zeros(1, 1, 1, 1)
    one = AutoregressivePrior(MemberRNG([0]), 1, 10.0, 0.1)
    var0 = 0.1 / (1 - math.exp(-0.2))
    assert one.log_prob(z1).item() == pytest.approx(-0.5 * math.log(2 * math.pi * var0), rel=1e-6)

    post_mean = torch.randn(P, B, T, D, generator=g) * 0.2
    post_std = torch.rand(P, B, T, D, generator=g) * 0.5 + 0.1
    kl = prior.kl(post_mean, post_std, z)
    log_q = stats.norm.logpdf(z.double().numpy(), post_mean.double().numpy(), post_std.double().numpy()).sum((-2, -1))
    np.testing.assert_allclose(kl.detach().numpy(), (log_q - want).mean(-1), rtol=1e-5)


def test_autoregressive_prior_expected_kl_is_the_gaussian_kl_and_the_mean_of_the_sampled_one():
    P, B, T, D = 2, 3, 6, 2
    prior = AutoregressivePrior(MemberRNG([0, 1]), D, 10.0, 0.1)
    tau, nvar = np.array([[10.0, 3.0], [1.5, 25.0]]), np.array([[0.1, 0.5], [0.05, 2.0]])
    with torch.no_grad():
        prior.log_tau.copy_(torch.tensor(np.log(tau)))
        prior.log_nvar.copy_(torch.tensor(np.log(nvar)))
    g = torch.Generator().manual_seed(3)
    mean = torch.randn(P, B, T, D, generator=g, dtype=torch.float64) * 0.5
    std = torch.rand(P, B, T, D, generator=g, dtype=torch.float64) * 0.8 + 0.1
    exact = prior.expected_kl(mean, std)
    want = ar_kl_by_hand(mean.numpy(), std.numpy(), tau, nvar).mean(-1)
    np.testing.assert_allclose(exact.detach().numpy(), want, rtol=1e-6)
    # the one-sample estimate of training averages to it
    samples = mean + std * torch.randn(4000, P, B, T, D, generator=g, dtype=torch.float64)
    sampled = torch.stack([prior.kl(mean, std, z) for z in samples]).mean(0)
    np.testing.assert_allclose(sampled.detach().numpy(), want, rtol=0.02)
