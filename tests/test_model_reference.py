"""model/reference.py: the clipped GRU step and sequence against the spec's equations (NumPy reference,
/work/shared/reference/lfads-model-spec.md), its clipping and the gradient at the clip. The reference decoder
loop is what the manual core is tested against (test_model_manual_backward.py); the Decoder is checked against
NumPy in test_model_decoder.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autolfads.model import MemberRNG
from autolfads.model.recurrent import ClippedGRUCell
from autolfads.model.reference import gru_sequence, gru_step
from helpers import member, numpy_gru_sequence, numpy_gru_step, randomize_, sigmoid


def test_gru_step_matches_spec_equations():
    P, B, n_in, H, clip = 2, 4, 3, 5, 100.0
    cell = ClippedGRUCell(MemberRNG([1, 2]), n_in, H, clip, encoder_init=True)
    randomize_(cell, 0, scale=0.8)
    x = torch.randn(P, B, n_in, generator=torch.Generator().manual_seed(1))
    h = torch.randn(P, B, H, generator=torch.Generator().manual_seed(2)) * 0.7
    w_zr, w_n = cell.split_recurrent()
    got = gru_step(torch.baddbmm(cell.bias.unsqueeze(1), x, cell.weight_ih), h, w_zr, w_n, clip)
    for p in range(P):
        want = numpy_gru_step(
            member(x, p), member(h, p), member(cell.weight_ih, p), member(cell.weight_hh, p), member(cell.bias, p), clip
        )
        np.testing.assert_allclose(got[p].detach().numpy(), want, atol=1e-5)

    # The reference is discriminating: the cuDNN (reset-after) form gives a clearly different state.
    xp = member(x, 0) @ member(cell.weight_ih, 0) + member(cell.bias, 0)
    whh, h0 = member(cell.weight_hh, 0), member(h, 0)
    z = sigmoid(xp[:, :H] + h0 @ whh[:, :H])
    r = sigmoid(xp[:, H : 2 * H] + h0 @ whh[:, H : 2 * H])
    n_after = np.tanh(xp[:, 2 * H :] + r * (h0 @ whh[:, 2 * H :]))
    reset_after = z * h0 + (1 - z) * n_after
    assert np.abs(reset_after - got[0].detach().numpy()).max() > 1e-2


def test_gru_step_clamps_state_and_blocks_gradient_at_clip():
    H, clip = 4, 0.5
    h = torch.tensor([[[0.0, 0.0, 0.0, 10.0]]])  # (G=1, B=1, H); unit 3 starts far beyond the clip
    big = 50.0
    # unit 0: z -> 0, n -> +1 => h' ~ 1 (clipped to +0.5); unit 1: n -> -1 (clipped to -0.5);
    # unit 2: z = 0.5, n = tanh(0.2) (inside); unit 3: z -> 1 keeps h = 10 (clipped to +0.5)
    z_pre = torch.tensor([-big, -big, 0.0, big])
    r_pre = torch.zeros(H)
    n_pre = torch.tensor([big, -big, 0.2, 0.0])
    x_proj = torch.cat([z_pre, r_pre, n_pre]).reshape(1, 1, 3 * H).requires_grad_(True)
    w_zr, w_n = torch.zeros(1, H, 2 * H), torch.zeros(1, H, H)
    out = gru_step(x_proj, h, w_zr, w_n, clip)
    assert out[0, 0, 0].item() == clip and out[0, 0, 1].item() == -clip and out[0, 0, 3].item() == clip
    assert out[0, 0, 2].item() == pytest.approx(0.5 * math.tanh(0.2), abs=1e-7)
    out.sum().backward()
    grad = x_proj.grad.reshape(3, H)
    assert torch.all(grad[:, [0, 1, 3]] == 0)  # no gradient through a clipped unit
    assert grad[0, 2] != 0 and grad[2, 2] != 0  # but gradient through the unclipped one


def test_gru_sequence_clips_every_step():
    cell = ClippedGRUCell(MemberRNG([3]), 2, 6, 0.3, encoder_init=False)
    randomize_(cell, 4, scale=3.0)
    x = torch.randn(1, 2, 20, 2, generator=torch.Generator().manual_seed(5)) * 3
    proj = (x @ cell.weight_ih.unsqueeze(1) + cell.bias[:, None, None]).transpose(1, 2)  # (P, T, B, 3H)
    states = gru_sequence(proj, torch.zeros(1, 2, 6), *cell.split_recurrent(), 0.3)
    assert states.abs().max().item() == pytest.approx(0.3)
    assert (states.abs() == 0.3).any()
    want = numpy_gru_sequence(
        member(x, 0), np.zeros((2, 6)), member(cell.weight_ih, 0), member(cell.weight_hh, 0), member(cell.bias, 0), 0.3
    )
    np.testing.assert_allclose(states[0].transpose(0, 1).detach().numpy(), want, atol=1e-5)
