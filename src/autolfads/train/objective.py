"""The LFADS training objective.

loss = loss_scale * (recon + l2_ramp * L2 + kl_ramp * (kl_ic_weight * KL_ic + kl_co_weight * KL_co)),
recon = element-wise mean NLL over batch x time x neurons. Everything is per member: (P,).
"""

from collections.abc import Mapping

import torch

from ..model.augmentations import block_gradients, pad_to


def ramp(epoch: int, start: int, increase: int) -> float:
    """0 before `start`, then linear to 1 over `increase` epochs (epoch counts from 0)."""
    return min(max((epoch + 1 - start) / (increase + 1), 0.0), 1.0)


def reconstruction_loss(
    nll: torch.Tensor, grad_mask: torch.Tensor | None = None, weight: torch.Tensor | None = None, start_bin: int = 0
) -> torch.Tensor:
    """nll: (P, B, T, N) -> (P,), the mean from bin start_bin on. grad_mask (coordinated dropout) and weight
    (sample validation) are over encoder inputs (…, T_enc, N_enc) and padded with ones to the reconstruction shape."""
    if grad_mask is not None:
        nll = block_gradients(nll, grad_mask)
    if weight is not None:
        nll = nll * pad_to(weight, nll.shape)
    return nll[:, :, start_bin:].mean((1, 2, 3))


def total_loss(
    recon: torch.Tensor,
    kl_ic: torch.Tensor,
    kl_co: torch.Tensor,
    l2: torch.Tensor,
    hp: Mapping[str, torch.Tensor],
    kl_ramp: float,
    l2_ramp: float,
    loss_scale: float,
) -> torch.Tensor:
    """The loss of each member (P,): hp holds its kl_ic_weight and kl_co_weight."""
    kl = hp["kl_ic_weight"] * kl_ic + hp["kl_co_weight"] * kl_co
    return loss_scale * (recon + l2_ramp * l2 + kl_ramp * kl)
