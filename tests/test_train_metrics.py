"""One R^2 and one bits per spike: evaluate.metrics (NumPy) is the definition, train.metrics (torch) its twin
for the training loop; both give the same numbers."""

import numpy as np
import pytest
import torch

from autolfads.evaluate import metrics as definition
from autolfads.train import metrics as twin


def test_r2_of_the_training_loop_is_the_definitions():
    rng = np.random.default_rng(0)
    truth = rng.gamma(2.0, 1.0, size=(7, 11, 5))
    preds = truth[None] + rng.normal(scale=[[[[0.3]]], [[[1.0]]]], size=(2, 7, 11, 5))
    got = twin.r2_score(torch.from_numpy(preds), torch.from_numpy(truth)).numpy()
    assert got == pytest.approx([definition.r2_score(truth, pred) for pred in preds], rel=1e-12)


def test_bits_per_spike_of_the_training_loop_is_the_definitions():
    rng = np.random.default_rng(1)
    rates = rng.gamma(2.0, 0.5, size=(6, 9, 4))
    spikes = rng.poisson(rates).astype(np.float64)
    counts, model_rates = torch.from_numpy(spikes), torch.from_numpy(rates)
    got = twin.bits_per_spike(
        twin.poisson_nll(model_rates, counts).sum(),
        torch.tensor(twin.null_nll_sum(counts), dtype=torch.float64),
        float(spikes.sum()),
    )
    assert float(got) == pytest.approx(definition.bits_per_spike(rates, spikes), rel=1e-12)
