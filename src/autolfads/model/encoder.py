"""Encoders: the IC encoder infers the initial-condition posterior, the CI encoder the controller inputs."""

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .cores import Core
from .population import MemberRNG, PopulationLinear, member_dropout
from .recurrent import BidirectionalGRU


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig, rng: MemberRNG, core: Core = "manual"):
        super().__init__()
        self.cfg = cfg
        self.ic_enc = BidirectionalGRU(rng, cfg.input_dim, cfg.ic_enc_dim, cfg.cell_clip, core)
        self.ic_linear = PopulationLinear(rng, 2 * cfg.ic_enc_dim, 2 * cfg.ic_dim)
        self.ci_enc = (
            BidirectionalGRU(rng, cfg.input_dim, cfg.ci_enc_dim, cfg.cell_clip, core) if cfg.use_controller else None
        )

    def forward(self, data: torch.Tensor, dropout_rate: torch.Tensor, rng: MemberRNG, training: bool):
        """data: (P, B, T_enc, N_enc), already dropped-out at the input.

        Returns ic_mean, ic_std (P, B, ic_dim) and the controller inputs ci (P, B, T_recon, 2 * ci_enc_dim),
        or None without a controller.
        """
        cfg = self.cfg
        ic_data = data[:, :, : cfg.ic_enc_seq_len] if cfg.ic_enc_seq_len > 0 else data
        *_, final = self.ic_enc(ic_data)
        ic_params = self.ic_linear(member_dropout(final, dropout_rate, rng, training))
        ic_mean, ic_logvar = ic_params.split(cfg.ic_dim, dim=-1)
        ic_std = torch.sqrt(torch.exp(ic_logvar) + cfg.ic_post_var_min)
        if self.ci_enc is None:
            return ic_mean, ic_std, None
        ci_fwd, ci_bwd, _ = self.ci_enc(data[:, :, cfg.ic_enc_seq_len :])
        # The forward half lags by ci_lag bins, the backward half leads by ci_lag: neither sees bin t itself.
        steps, lag = ci_fwd.shape[2], cfg.ci_lag
        ci_fwd = F.pad(ci_fwd, (0, 0, lag, 0))[:, :, :steps]
        ci_bwd = F.pad(ci_bwd, (0, 0, 0, lag))[:, :, lag:]
        ci = torch.cat([ci_fwd, ci_bwd], dim=-1)
        # Zeros for the IC-only leading bins and the forward-prediction bins.
        ci = F.pad(ci, (0, 0, cfg.ic_enc_seq_len, cfg.recon_seq_len - cfg.encod_seq_len))
        return ic_mean, ic_std, ci
