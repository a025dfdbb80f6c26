"""model/recurrent.py: the clipped GRU cell's parameters and init statistics, and the bidirectional GRU against
the spec's equations (NumPy reference; /work/shared/reference/lfads-model-spec.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autolfads.model import MemberRNG
from autolfads.model.recurrent import BidirectionalGRU, ClippedGRUCell
from helpers import member, numpy_gru_sequence, randomize_

# ==================================================================================== 1. recurrent cell


def test_gru_cell_has_no_hidden_hidden_bias():
    cell = ClippedGRUCell(MemberRNG([0, 1, 2]), 4, 6, 5.0, encoder_init=False)
    shapes = {name: tuple(p.shape) for name, p in cell.named_parameters()}
    assert shapes == {"weight_ih": (3, 4, 18), "weight_hh": (3, 6, 18), "bias": (3, 18)}


@pytest.mark.parametrize(
    ("encoder_init", "std_ih", "std_hh"),
    [(True, (300 + 200) ** -0.5, (300 + 200) ** -0.5), (False, 300**-0.5, 200**-0.5)],
)
def test_gru_init_statistics(encoder_init, std_ih, std_hh):
    cell = ClippedGRUCell(MemberRNG([0, 1]), 300, 200, 5.0, encoder_init=encoder_init)
    for weight, std in ((cell.weight_ih, std_ih), (cell.weight_hh, std_hh)):
        for p in range(2):
            values = weight[p].detach()
            assert values.std().item() == pytest.approx(std, rel=0.02)
            assert abs(values.mean().item()) < 0.02 * std
    assert not torch.equal(cell.weight_hh[0], cell.weight_hh[1])  # members draw independently
    assert torch.equal(cell.bias[:, :400], torch.ones(2, 400))  # z and r gates
    assert torch.equal(cell.bias[:, 400:], torch.zeros(2, 200))  # candidate


def test_bidirectional_gru_is_forward_and_time_reversed_backward():
    P, B, T, n_in, H, clip = 2, 3, 6, 4, 5, 1.0
    bigru = BidirectionalGRU(MemberRNG([7, 8]), n_in, H, clip)
    randomize_(bigru, 9, scale=0.9)
    x = torch.randn(P, B, T, n_in, generator=torch.Generator().manual_seed(10)) * 2
    fwd, bwd, final = bigru(x)
    assert fwd.shape == bwd.shape == (P, B, T, H) and final.shape == (P, B, 2 * H)
    for p in range(P):
        h0 = member(bigru.h0, p)
        f, b = bigru.forward_cell, bigru.backward_cell
        want_f = numpy_gru_sequence(
            member(x, p),
            np.tile(h0[0], (B, 1)),
            member(f.weight_ih, p),
            member(f.weight_hh, p),
            member(f.bias, p),
            clip,
        )
        reversed_x = member(x, p)[:, ::-1]
        want_b = numpy_gru_sequence(
            reversed_x, np.tile(h0[1], (B, 1)), member(b.weight_ih, p), member(b.weight_hh, p), member(b.bias, p), clip
        )[:, ::-1]
        np.testing.assert_allclose(fwd[p].detach().numpy(), want_f, atol=1e-5)
        np.testing.assert_allclose(bwd[p].detach().numpy(), want_b, atol=1e-5)
        np.testing.assert_allclose(
            final[p].detach().numpy(), np.concatenate([want_f[:, -1], want_b[:, 0]], -1), atol=1e-5
        )
    # The backward state at time 0 has seen the whole sequence: changing the last bin changes it.
    x2 = x.clone()
    x2[:, :, -1] += 1.0
    fwd2, bwd2, _ = bigru(x2)
    assert torch.equal(fwd2[:, :, :-1], fwd[:, :, :-1]) and not torch.allclose(bwd2[:, :, 0], bwd[:, :, 0])
