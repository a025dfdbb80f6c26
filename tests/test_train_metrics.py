"""train/metrics.py: smoothing, bits per spike, the null NLL, R^2 and its accumulator, by hand; and one R^2
and one bits per spike: evaluate.metrics (NumPy) is the definition, train.metrics (torch) its twin for the
training loop, and both give the same numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autolfads.evaluate import metrics as definition
from autolfads.train import metrics as twin
from autolfads.train.metrics import R2Accumulator, bits_per_spike, null_nll_sum, poisson_nll, r2_score, smooth

# ==================================================================================== 10. metrics


def test_smooth():
    previous = torch.tensor([math.nan, 1.0, 4.0])
    current = torch.tensor([2.0, 2.0, math.nan])
    out = smooth(previous, current)
    assert out[0].item() == 2.0 and out[1].item() == pytest.approx(0.3 * 1.0 + 0.7 * 2.0)
    assert math.isnan(out[2].item())


def test_bits_per_spike_by_hand():
    bps = bits_per_spike(
        torch.tensor([90.0, 100.0, 120.0], dtype=torch.float64), torch.tensor(100.0, dtype=torch.float64), 50.0
    )
    torch.testing.assert_close(
        bps, torch.tensor([10 / (50 * math.log(2)), 0.0, -20 / (50 * math.log(2))], dtype=torch.float64)
    )
    assert torch.isnan(bits_per_spike(torch.tensor([1.0]), torch.tensor(2.0), 0.0)).all()


def test_null_nll_sum_and_poisson_nll_by_hand():
    counts = torch.tensor([[[0.0, 2.0], [1.0, 4.0]], [[3.0, 0.0], [0.0, 2.0]]], dtype=torch.float64)  # (n=2, T=2, N=2)
    # neuron means: (0 + 1 + 3 + 0) / 4 = 1, (2 + 4 + 0 + 2) / 4 = 2
    want = (4 * 1.0 - 4 * math.log(1.0)) + (4 * 2.0 - 8 * math.log(2.0))
    assert null_nll_sum(counts) == pytest.approx(want)
    nll = poisson_nll(torch.tensor([0.0, 2.0], dtype=torch.float64), torch.tensor([0.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(nll, torch.tensor([1e-9, 2.0 - 3 * math.log(2.0)], dtype=torch.float64))


def test_r2_score_by_hand():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(6, 5, 4))
    pred = truth[None] + rng.normal(scale=[[[[0.1]]], [[[0.8]]]], size=(2, 6, 5, 4))
    got = r2_score(torch.tensor(pred), torch.tensor(truth)).numpy()
    flat_t = truth.reshape(-1, 4)
    want = []
    for p in range(2):
        flat_p = pred[p].reshape(-1, 4)
        ss_res = ((flat_p - flat_t) ** 2).sum(0)
        ss_tot = ((flat_t - flat_t.mean(0)) ** 2).sum(0)
        want.append(np.mean(1 - ss_res / ss_tot))
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert got[0] > got[1]
    perfect = r2_score(torch.tensor(truth)[None], torch.tensor(truth))
    mean_only = r2_score(
        torch.tensor(np.broadcast_to(truth.mean((0, 1)), truth.shape).copy())[None], torch.tensor(truth)
    )
    assert perfect.item() == 1.0 and mean_only.item() == pytest.approx(0.0, abs=1e-12)


def test_r2_accumulator_over_batches_equals_one_shot():
    g = torch.Generator().manual_seed(4)
    truth = torch.randn(10, 6, 3, generator=g, dtype=torch.float64)
    pred = truth + 0.5 * torch.randn(2, 10, 6, 3, generator=g, dtype=torch.float64)
    accumulator = R2Accumulator(truth)
    for idx in torch.arange(10).split(4):
        accumulator.add(pred[:, idx], truth[idx])
    torch.testing.assert_close(accumulator.value(), r2_score(pred, truth))


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
