"""The training loop's metric maths on tensors: smoothing, Poisson NLL, bits per spike, R^2.

evaluate/metrics.py (NumPy) holds the definitions of bits per spike and R^2; these are their torch twins,
for populations of members on the device, accumulated batch by batch (tests/test_train_metrics.py checks they agree).
"""

import math

import torch

SMOOTHING = 0.7  # smth = (1 - SMOOTHING) * previous + SMOOTHING * current


def smooth(previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Exponential smoothing of a per-member metric; the first value (previous NaN) is taken as is."""
    smoothed = (1 - SMOOTHING) * previous + SMOOTHING * current
    return torch.where(torch.isnan(previous), current, smoothed)


def poisson_nll(rates: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Element-wise r - n log r with zero rates floored at 1e-9 (NLB's convention; log n! omitted)."""
    rates = rates.clamp_min(1e-9)
    return rates - counts * rates.log()


def bits_per_spike(model_nll_sum: torch.Tensor, null_nll_sum: torch.Tensor, n_spikes: float) -> torch.Tensor:
    """Information gain over the null model (each neuron's mean rate), in bits per spike."""
    return (
        (null_nll_sum - model_nll_sum) / (n_spikes * math.log(2))
        if n_spikes > 0
        else torch.full_like(model_nll_sum, math.nan)
    )


def null_nll_sum(counts: torch.Tensor) -> float:
    """Poisson NLL of predicting each neuron's mean count over trials and bins: counts (n, T, N)."""
    null_rates = counts.mean((0, 1), keepdim=True).expand_as(counts)
    return float(poisson_nll(null_rates, counts).sum())


def r2_score(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """R^2 per neuron over trials x bins, averaged over neurons. pred: (P, n, T, N), truth: (n, T, N) -> (P,)."""
    accumulator = R2Accumulator(truth)
    accumulator.add(pred, truth)
    return accumulator.value()


class R2Accumulator:
    """R^2 per neuron accumulated batch by batch (the truth's mean per neuron is known up front)."""

    def __init__(self, truth: torch.Tensor):
        self.truth_mean = truth.mean((0, 1))
        self.ss_tot = (truth - self.truth_mean).square().sum((0, 1))
        self.ss_res = None

    def add(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        ss_res = (pred - truth.unsqueeze(0)).square().sum((1, 2))
        self.ss_res = ss_res if self.ss_res is None else self.ss_res + ss_res

    def value(self) -> torch.Tensor:
        return (1 - self.ss_res / self.ss_tot).mean(-1)
