"""Trials as the Trainer feeds them to the model: splits moved to the device once, batches of trials with
their sample-validation weights, and the training augmentations (temporal shift, spike jitter)."""

from dataclasses import dataclass, replace

import torch

from ..config import ModelConfig
from ..data.dataset import Split
from ..errors import ConfigError
from ..model.augmentations import sample_validation_mask, spike_jitter, temporal_shift
from ..model.population import MemberRNG


@dataclass
class Batch:
    encod: torch.Tensor  # (B, T_enc, N_enc)
    recon: torch.Tensor  # (B, T_recon, N_recon)
    ext_input: torch.Tensor | None
    truth: torch.Tensor | None
    sv_weight: torch.Tensor | None  # sample-validation mask scaled by 1 / (1 - sv_rate); 0 = held back

    def masked_encod(self) -> torch.Tensor:
        """Encoder inputs with the sample-validation entries held back (zeroed)."""
        return self.encod if self.sv_weight is None else self.encod * self.sv_weight


def to_device(split: Split, device: torch.device) -> Split:
    def move(t):
        return None if t is None else t.to(device)

    return replace(
        split,
        encod=move(split.encod),
        recon=move(split.recon),
        ext_input=move(split.ext_input),
        truth=move(split.truth),
    )


class SampleValidation:
    """One fixed sample-validation mask per session and split (model.sv_rate), made when first asked for."""

    def __init__(self, cfg: ModelConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self._weights: dict[tuple[int, str], torch.Tensor] = {}

    def weight(self, session: int, split: Split) -> torch.Tensor | None:
        cfg = self.cfg
        if cfg.sv_rate == 0:
            return None
        key = (session, split.name)
        if key not in self._weights:
            # Seeded by sv_seed, the split's name and the session.
            seed = cfg.sv_seed * 3 + ("train", "valid", "test").index(split.name) + 100_003 * session
            shape = tuple(split.encod.shape)
            mask = sample_validation_mask(shape, cfg.sv_rate, seed, cfg.ic_enc_seq_len).to(self.device)
            weight = mask / (1 - cfg.sv_rate)
            weight[:, : cfg.ic_enc_seq_len] = 1.0
            self._weights[key] = weight
        return self._weights[key]


def take_batch(split: Split, indices: torch.Tensor, sv_weight: torch.Tensor | None) -> Batch:
    indices = indices.to(split.encod.device)

    def take(t):
        return None if t is None else t[indices]

    return Batch(split.encod[indices], split.recon[indices], take(split.ext_input), take(split.truth), take(sv_weight))


def augment(batch: Batch, cfg: ModelConfig, rng: MemberRNG) -> Batch:
    """Temporal shift and spike jitter (model.temporal_shift_*, model.spike_jitter_width) of a training
    batch, member by member: targets and inputs become (P, B, T, N), inputs the targets' leading part."""
    shift = cfg.temporal_shift_std > 0 and cfg.temporal_shift_max > 0
    if not shift and cfg.spike_jitter_width == 0:
        return batch
    recon = batch.recon
    if cfg.spike_jitter_width:
        recon = spike_jitter(recon, cfg.spike_jitter_width, rng)
    if shift:
        recon = temporal_shift(recon, cfg.temporal_shift_std, cfg.temporal_shift_max, rng)
    encod = torch.nan_to_num(recon[..., : cfg.encod_seq_len, : cfg.encod_dim], nan=0.0)
    return Batch(encod, recon, batch.ext_input, batch.truth, batch.sv_weight)


def check_augmentations(cfg: ModelConfig, train_split: Split, data_path) -> None:
    """The augmentations shift the reconstruction targets and derive the inputs from them: check they can."""
    if cfg.spike_jitter_width and cfg.reconstruction != "poisson":
        raise ConfigError(
            "model.spike_jitter_width moves spikes and needs spike counts (model.reconstruction poisson), not "
            f"{cfg.reconstruction}; use model.temporal_shift_std for continuous data"
        )
    if not (cfg.spike_jitter_width or (cfg.temporal_shift_std > 0 and cfg.temporal_shift_max > 0)):
        return
    leading = torch.nan_to_num(train_split.recon[:, : cfg.encod_seq_len, : cfg.encod_dim], nan=0.0)
    if not torch.equal(leading, train_split.encod):
        raise ConfigError(
            "temporal shift / spike jitter need encoder inputs equal to the leading bins and neurons of the "
            f"reconstruction targets, which {data_path} does not have"
        )
