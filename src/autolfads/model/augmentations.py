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

    encod: (B, T, N) or (P, B, T, N), cd_rate: (P,). Returns the member inputs (P, B, T, N), kept entries scaled by
    1/(1 - cd_rate), and the gradient mask (P, B, T, N): 1 where the reconstruction may pass gradient.
    A member with cd_rate = 0 sees its data unchanged and passes gradient everywhere.
    """
    rate = cd_rate.reshape(-1, 1, 1, 1)
    keep = rng.uniform(*encod.shape[-3:]) >= rate  # encod may already be per member (P, B, T, N)
    keep[:, :, :start_bin] = True
    grad_mask = ~keep
    if pass_rate > 0:
        grad_mask |= rng.uniform(*encod.shape[-3:]) < pass_rate
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


# ---------------------------------------------------------------- published train-time augmentations
# Both draw from each member's own generator (MemberRNG), so a member's augmented batches do not depend on
# how many other members share the process. Both act on the reconstruction targets (B, T, N) or (P, B, T, N)
# and return (P, B, T, N); the encoder inputs are then the leading bins and neurons of the augmented targets.


def _per_member(data: torch.Tensor, rng: MemberRNG) -> torch.Tensor:
    return data.expand(len(rng), *data.shape[-3:])


def temporal_shift(data: torch.Tensor, std: float, max_shift: int, rng: MemberRNG) -> torch.Tensor:
    """Shift each trial-neuron's time series by round(N(0, std^2)) bins, clipped to +-max_shift (lfads-torch's
    TemporalShift). Bins shifted in from beyond the edge repeat the edge bin, so every value stays valid for
    the observation model (no artificial zeros for Gamma data)."""
    data = _per_member(data, rng)
    if std <= 0 or max_shift <= 0:
        return data
    n_bins = data.shape[-2]
    shifts = (rng.normal(data.shape[1], data.shape[3]) * std).round().clamp(-max_shift, max_shift).long()  # (P, B, N)
    source = torch.arange(n_bins, device=data.device).reshape(1, 1, -1, 1) - shifts.unsqueeze(2)
    return torch.gather(data, 2, source.clamp(0, n_bins - 1))


def spike_jitter(counts: torch.Tensor, width: int, rng: MemberRNG) -> torch.Tensor:
    """Move every spike by an independent uniform offset in [-width, width] bins (clamped at the trial's
    edges), so spike counts per trial and neuron are preserved. NaN (missing, SBTT) bins stay NaN and take no
    spikes: a spike jittered into one is dropped."""
    counts = _per_member(counts, rng)
    if width <= 0:
        return counts
    missing = torch.isnan(counts)
    filled = torch.nan_to_num(counts, nan=0.0)
    n_bins = counts.shape[-2]
    bins = torch.arange(n_bins, device=counts.device).reshape(1, 1, -1, 1)
    out = torch.zeros_like(filled)
    for k in range(int(filled.max().item()) if filled.numel() else 0):
        present = (filled > k).to(filled.dtype)  # the (k+1)-th spike of each bin
        offsets = (rng.uniform(*counts.shape[1:]) * (2 * width + 1)).floor().long() - width
        out.scatter_add_(2, (bins + offsets).clamp(0, n_bins - 1), present)
    return out.masked_fill(missing, float("nan"))


def sbtt_targets(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Selective backprop through time: NaN targets are missing bins.

    Returns the targets with NaN replaced by 1 (a value every observation model accepts, so the NLL and its
    gradient stay finite there) and the loss weight observed / (fraction observed): the mean of nll * weight
    is the mean NLL over the observed entries, i.e. the masked loss divided by (1 - fraction missing).
    weight is None when nothing is missing (the loss is then exactly the unmasked one).
    """
    observed = ~torch.isnan(target)
    if bool(observed.all()):
        return target, None
    fraction = observed.to(target.dtype).mean().clamp_min(1.0 / observed.numel())
    return torch.where(observed, target, torch.ones_like(target)), observed.to(target.dtype) / fraction
