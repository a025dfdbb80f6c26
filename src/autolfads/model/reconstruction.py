"""Observation models: how the readout's output parameters explain the recorded data.

Each model has `n_params` outputs per neuron and bin (last axis), an element-wise negative log-likelihood
and the distribution mean (the "rates" users get). Gamma and zero-inflated Gamma join by subclassing.
"""

import math
from abc import ABC, abstractmethod

import numpy as np
import torch
import torch.nn.functional as F


class Reconstruction(ABC):
    name: str
    n_params: int

    @abstractmethod
    def nll(self, params: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """params (..., N, n_params), target (..., N) -> element-wise NLL (..., N)."""

    @abstractmethod
    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """params (..., N, n_params) -> distribution mean (..., N)."""

    @abstractmethod
    def mean_parameter(self, mean: np.ndarray) -> tuple[int, np.ndarray, int]:
        """Where a read-out starts for data means `mean` (N,) (multi-session PCR): the output parameter that
        carries the mean, its value where the distribution mean is `mean`, and +1 / -1 as the mean grows / falls
        with it."""


MIN_MEAN = 1e-3  # means are floored here before a log link: a silent neuron must not give -inf


class Poisson(Reconstruction):
    """Log-rate link. The NLL omits the data-only log(k!) term; lfads-tf2 and lfads-torch add its Stirling
    approximation k log k - k + 0.5 log(2 pi k) for k > 1 (a constant of the data: same gradients)."""

    name, n_params = "poisson", 1

    def nll(self, params, target):
        log_rate = params[..., 0]
        return torch.exp(log_rate) - target * log_rate

    def mean(self, params):
        return torch.exp(params[..., 0])

    def mean_parameter(self, mean):
        return 0, np.log(np.maximum(mean, MIN_MEAN)), 1


class Gaussian(Reconstruction):
    """Mean and log-variance per neuron and bin (EMG, calcium-derived and other continuous signals)."""

    name, n_params = "gaussian", 2

    def nll(self, params, target):
        mean, logvar = params[..., 0], params[..., 1]
        return 0.5 * (math.log(2 * math.pi) + logvar + (target - mean).square() / logvar.exp())

    def mean(self, params):
        return params[..., 0]

    def mean_parameter(self, mean):
        return 0, mean, 1


class Gamma(Reconstruction):
    """Gamma with log links (as lfads-torch): params = (log shape alpha, log rate beta); mean alpha / beta.

    Density alpha*log(beta) - lgamma(alpha) + (alpha - 1) log(y) - beta*y (scipy: gamma(a=alpha, scale=1/beta)).
    Needs y > 0 (a zero has zero density: use ZIG). At the readout's init (outputs ~ 0) alpha = beta = 1, mean 1.
    """

    name, n_params = "gamma", 2

    def nll(self, params, target):
        log_alpha, log_beta = params[..., 0], params[..., 1]
        alpha = log_alpha.exp()
        return torch.lgamma(alpha) - alpha * log_beta - (alpha - 1) * torch.log(target) + log_beta.exp() * target

    def mean(self, params):
        return torch.exp(params[..., 0] - params[..., 1])

    def mean_parameter(self, mean):
        # log alpha starts at 0 (alpha = 1), so the mean is 1 / beta: log beta = -log(mean)
        return 1, -np.log(np.maximum(mean, MIN_MEAN)), -1


class ZeroInflatedGamma(Reconstruction):
    """Zero-inflated Gamma (Wei et al. 2020, lfads-torch's ZeroInflatedGamma) for deconvolved calcium events.

    params = (log alpha, log beta, logit q): q is the probability of an event. A zero has likelihood 1 - q;
    an event y > 0 has q * Gamma(y - s_min; alpha, rate beta): the Gamma is shifted by the minimum event size
    `s_min` (lfads-torch's gamma location), y - s_min is clamped at 1e-8 so events below s_min stay finite.
    Mean q * (s_min + alpha / beta). s_min = 0 (the default) is the plain zero-inflated Gamma.
    """

    name, n_params = "zig", 3
    EPS = 1e-8

    def __init__(self, s_min: float = 0.0):
        self.s_min = float(s_min)

    def nll(self, params, target):
        log_alpha, log_beta, logit_q = params[..., 0], params[..., 1], params[..., 2]
        alpha = log_alpha.exp()
        event = target > 0
        excess = torch.where(event, target - self.s_min, torch.ones_like(target)).clamp_min(self.EPS)
        gamma_nll = torch.lgamma(alpha) - alpha * log_beta - (alpha - 1) * torch.log(excess) + log_beta.exp() * excess
        # -log q = softplus(-logit), -log(1 - q) = softplus(logit): stable for large |logit|
        return torch.where(event, F.softplus(-logit_q) + gamma_nll, F.softplus(logit_q))

    def mean(self, params):
        q = torch.sigmoid(params[..., 2])
        return q * (self.s_min + torch.exp(params[..., 0] - params[..., 1]))

    def mean_parameter(self, mean):
        # q = 1/2 (logit 0) and alpha = 1 at the start: mean = (s_min + 1 / beta) / 2, so 1 / beta = 2 mean - s_min
        return 1, -np.log(np.maximum(2 * mean - self.s_min, MIN_MEAN)), -1


RECONSTRUCTIONS: dict[str, type[Reconstruction]] = {
    cls.name: cls for cls in (Poisson, Gaussian, Gamma, ZeroInflatedGamma)
}


def make_reconstruction(cfg) -> Reconstruction:
    """The observation model a ModelConfig names (ZIG takes model.zig_s_min)."""
    if cfg.reconstruction == "zig":
        return ZeroInflatedGamma(getattr(cfg, "zig_s_min", 0.0))
    return RECONSTRUCTIONS[cfg.reconstruction]()
