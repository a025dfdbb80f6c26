"""train/objective.py: the reconstruction loss (mean, masks and weights), the KL/L2 ramps and the total
loss formula."""

from __future__ import annotations

import pytest
import torch

from autolfads.train.objective import ramp, reconstruction_loss, total_loss


def test_reconstruction_loss_mean_mask_and_weight():
    P, B, T, N = 2, 3, 6, 5
    g = torch.Generator().manual_seed(1)
    nll = torch.rand(P, B, T, N, generator=g).requires_grad_(True)
    grad_mask = (torch.rand(P, B, 4, 3, generator=g) < 0.5).float()
    weight = (torch.rand(B, 4, 3, generator=g) < 0.7).float() / 0.7
    loss = reconstruction_loss(nll, grad_mask, weight)
    w = torch.ones(B, T, N)
    w[:, :4, :3] = weight
    torch.testing.assert_close(loss, (nll.detach() * w).mean((1, 2, 3)))
    loss.sum().backward()
    m = torch.ones(P, B, T, N)
    m[:, :, :4, :3] = grad_mask
    torch.testing.assert_close(nll.grad, m * w / (B * T * N))
    assert torch.allclose(reconstruction_loss(nll.detach()), nll.detach().mean((1, 2, 3)))


# ==================================================================================== 8. objective


@pytest.mark.parametrize(
    ("epoch", "start", "increase", "want"),
    [
        (0, 0, 80, 1 / 81),
        (1, 0, 80, 2 / 81),
        (79, 0, 80, 80 / 81),
        (80, 0, 80, 1.0),
        (500, 0, 80, 1.0),
        (3, 5, 10, 0.0),
        (4, 5, 10, 0.0),
        (5, 5, 10, 1 / 11),
        (14, 5, 10, 10 / 11),
        (15, 5, 10, 1.0),
        (0, 0, 0, 1.0),
    ],
)
def test_ramp(epoch, start, increase, want):
    assert ramp(epoch, start, increase) == pytest.approx(want, abs=1e-12)


def test_total_loss_formula():
    t = torch.tensor
    hp = {"kl_ic_weight": t([0.1, 0.2]), "kl_co_weight": t([0.01, 0.02])}
    loss = total_loss(t([1.0, 2.0]), t([3.0, 4.0]), t([5.0, 6.0]), t([7.0, 8.0]), hp, 0.5, 0.25, 10.0)
    # 10 * (1 + 0.25 * 7 + 0.5 * (0.1 * 3 + 0.01 * 5)) and 10 * (2 + 0.25 * 8 + 0.5 * (0.2 * 4 + 0.02 * 6))
    torch.testing.assert_close(loss, t([29.25, 44.6]))
