"""Observation models: how the readout's output parameters explain the recorded data.

Each model has `n_params` outputs per neuron and bin (last axis), an element-wise negative log-likelihood
and the distribution mean (the "rates" users get). Gamma and zero-inflated Gamma join by subclassing.
"""

import math
from abc import ABC, abstractmethod

import torch


class Reconstruction(ABC):
    name: str
    n_params: int

    @abstractmethod
    def nll(self, params: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """params (..., N, n_params), target (..., N) -> element-wise NLL (..., N)."""

    @abstractmethod
    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """params (..., N, n_params) -> distribution mean (..., N)."""


class Poisson(Reconstruction):
    """Log-rate link. The NLL omits the data-only log(k!) term, as lfads-tf2 and lfads-torch do."""

    name, n_params = "poisson", 1

    def nll(self, params, target):
        log_rate = params[..., 0]
        return torch.exp(log_rate) - target * log_rate

    def mean(self, params):
        return torch.exp(params[..., 0])


class Gaussian(Reconstruction):
    """Mean and log-variance per neuron and bin (EMG, calcium-derived and other continuous signals)."""

    name, n_params = "gaussian", 2

    def nll(self, params, target):
        mean, logvar = params[..., 0], params[..., 1]
        return 0.5 * (math.log(2 * math.pi) + logvar + (target - mean).square() / logvar.exp())

    def mean(self, params):
        return params[..., 0]


RECONSTRUCTIONS: dict[str, type[Reconstruction]] = {cls.name: cls for cls in (Poisson, Gaussian)}
