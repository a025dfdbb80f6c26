"""Coordinated dropout and sample validation: input masks paired with loss masks.

Both only touch bins from `start_bin` (= ic_enc_seq_len) on: earlier bins feed only the IC encoder.
Masks over encoder inputs (held-in neurons, trial bins) are padded with ones to the reconstruction shape,
so held-out neurons and forward-prediction bins always count.
"""

import torch
import torch.nn.functional as F

from .population import MemberRNG


def coordinated_dropout(
    encod: torch.Tensor, cd_rate: torch.Tensor, pass_rate: float, rng: MemberRNG, start_bin: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop input entries with a per-member rate; the loss then learns only from the dropped entries.

    encod: (B, T, N), cd_rate: (P,). Returns the member inputs (P, B, T, N), kept entries scaled by
    1/(1 - cd_rate), and the gradient mask (P, B, T, N): 1 where the reconstruction may pass gradient.
    A member with cd_rate = 0 sees its data unchanged and passes gradient everywhere.
    """
    rate = cd_rate.reshape(-1, 1, 1, 1)
    keep = rng.uniform(*encod.shape) >= rate
    keep[:, :, :start_bin] = True
    grad_mask = ~keep
    if pass_rate > 0:
        grad_mask |= rng.uniform(*encod.shape) < pass_rate
    grad_mask[:, :, :start_bin] = True
    grad_mask |= rate == 0
    scale = torch.ones_like(keep, dtype=encod.dtype) / (1 - rate)
    scale[:, :, :start_bin] = 1.0
    return encod * keep * scale, grad_mask.to(encod.dtype)


def pad_to(mask: torch.Tensor, shape: torch.Size, value: float = 1.0) -> torch.Tensor:
    """Pad (..., T_enc, N_enc) with `value` at the end of time and neurons up to (..., T_recon, N_recon)."""
    return F.pad(mask, (0, shape[-1] - mask.shape[-1], 0, shape[-2] - mask.shape[-2]), value=value)


def block_gradients(loss: torch.Tensor, grad_mask: torch.Tensor) -> torch.Tensor:
    """Same value as `loss`, but gradient flows only where grad_mask (padded to loss's shape) is 1."""
    mask = pad_to(grad_mask, loss.shape)
    return loss * mask + (loss * (1 - mask)).detach()


def sample_validation_mask(shape: tuple[int, int, int], rate: float, seed: int, start_bin: int) -> torch.Tensor:
    """Fixed, seeded mask (trials, T_enc, N_enc): 0 marks entries held back from the input and scored apart."""
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.rand(shape, generator=generator) >= rate).float()
    mask[:, :start_bin] = 1.0
    return mask
