"""Priors over the initial condition (IC) and the controller outputs (CO), and their KL terms.

KL terms are summed over dimensions (and time), averaged over the batch: one value per member (P,).
"""

import math

import torch
from torch import nn

from .population import MemberRNG


class GaussianPrior(nn.Module):
    """Diagonal Gaussian with a learnable mean (init 0) and a fixed variance (IC prior)."""

    def __init__(self, rng: MemberRNG, dim: int, variance: float):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(len(rng), dim, device=rng.device))
        self.register_buffer("logvar", torch.full((len(rng), dim), math.log(variance), device=rng.device))

    def kl(self, post_mean: torch.Tensor, post_std: torch.Tensor) -> torch.Tensor:
        """Analytic KL(q || p) for q = N(post_mean, post_std^2): (P, B, D) -> (P,)."""
        prior_mean, prior_logvar = self.mean.unsqueeze(1), self.logvar.unsqueeze(1)
        post_var = post_std.square()
        kl = 0.5 * (
            prior_logvar - post_var.log() + (post_var + (post_mean - prior_mean).square()) / prior_logvar.exp() - 1.0
        )
        return kl.sum(-1).mean(-1)


class AutoregressivePrior(nn.Module):
    """AR(1) process per CO dimension: z_0 ~ N(0, nvar / (1 - a^2)), z_t ~ N(a z_{t-1}, nvar), a = exp(-1/tau).

    log tau (init log 10) and log nvar (init log 0.1) are learnable.
    """

    def __init__(self, rng: MemberRNG, dim: int, tau: float, noise_variance: float):
        super().__init__()
        self.log_tau = nn.Parameter(torch.full((len(rng), dim), math.log(tau), device=rng.device))
        self.log_nvar = nn.Parameter(torch.full((len(rng), dim), math.log(noise_variance), device=rng.device))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """z: (P, B, T, D) -> log p(z) summed over time and dims: (P, B)."""
        alpha = torch.exp(-1.0 / self.log_tau.exp()).unsqueeze(1).unsqueeze(1)  # (P, 1, 1, D)
        log_nvar = self.log_nvar.unsqueeze(1).unsqueeze(1)
        first_logvar = log_nvar - torch.log1p(-alpha.square())
        first = _normal_log_density(z[:, :, :1], torch.zeros_like(z[:, :, :1]), first_logvar)
        rest = _normal_log_density(z[:, :, 1:], alpha * z[:, :, :-1], log_nvar)
        return first.sum((-2, -1)) + rest.sum((-2, -1))

    def kl(self, post_mean: torch.Tensor, post_std: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """One-sample Monte Carlo KL = log q(z) - log p(z) of the CO sequence the decoder used: (P,)."""
        log_q = _normal_log_density(sample, post_mean, 2.0 * post_std.log()).sum((-2, -1))
        return (log_q - self.log_prob(sample)).mean(-1)

    def expected_kl(self, post_mean: torch.Tensor, post_std: torch.Tensor) -> torch.Tensor:
        """KL(q || p) in closed form for q = N(post_mean, post_std^2) independent over bins: (P, B, T, D) -> (P,).
        The expectation of `kl` over z ~ q, so never negative; what validation reports, since a pass with
        posterior means has no sample to evaluate log q - log p at."""
        alpha = torch.exp(-1.0 / self.log_tau.exp()).unsqueeze(1).unsqueeze(1)  # (P, 1, 1, D)
        log_nvar = self.log_nvar.unsqueeze(1).unsqueeze(1)
        first_logvar = log_nvar - torch.log1p(-alpha.square())
        var = post_std.square()
        # E_q[(z_t - a z_{t-1})^2] with z_t, z_{t-1} independent under q
        first_sq = post_mean[:, :, :1].square() + var[:, :, :1]
        rest_sq = (
            (post_mean[:, :, 1:] - alpha * post_mean[:, :, :-1]).square()
            + var[:, :, 1:]
            + alpha.square() * var[:, :, :-1]
        )
        neg_log_p = 0.5 * (first_logvar + first_sq / first_logvar.exp()).sum((-2, -1)) + 0.5 * (
            log_nvar + rest_sq / log_nvar.exp()
        ).sum((-2, -1))
        neg_entropy = -0.5 * (var.log() + 1.0).sum((-2, -1))  # E_q[log q] without the log(2 pi) that cancels
        return (neg_entropy + neg_log_p).mean(-1)


def _normal_log_density(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mean).square() / logvar.exp())
