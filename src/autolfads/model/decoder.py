"""Decoder: the controller and the generator unrolled over the reconstruction window."""

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from .cores import Core, decode, project
from .decoder_inputs import ControllerSide, DecoderInputs, GeneratorSide
from .population import MemberRNG, PopulationLinear, dropout_mask, member_dropout
from .recurrent import ClippedGRUCell


@dataclass
class DecoderStates:
    """Per-step decoder quantities, each (P, B, T, dim); con/co entries are empty without a controller."""

    gen_init: torch.Tensor  # (P, B, gen_dim)
    gen_states: torch.Tensor
    factors: torch.Tensor
    con_states: torch.Tensor
    co_means: torch.Tensor
    co_stds: torch.Tensor
    gen_inputs: torch.Tensor  # the controller outputs fed to the generator (sampled or means)


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig, rng: MemberRNG, core: Core = "manual"):
        super().__init__()
        self.cfg, self.core = cfg, core
        self.ic_to_gen = PopulationLinear(rng, cfg.ic_dim, cfg.gen_dim)
        if cfg.use_controller:
            self.con_cell = ClippedGRUCell(
                rng, 2 * cfg.ci_enc_dim + cfg.fac_dim, cfg.con_dim, cfg.cell_clip, encoder_init=False
            )
            self.con_h0 = nn.Parameter(torch.zeros(len(rng), cfg.con_dim, device=rng.device))
            self.co_linear = PopulationLinear(rng, cfg.con_dim, 2 * cfg.co_dim)
        co_dim = cfg.co_dim if cfg.use_controller else 0
        self.gen_cell = ClippedGRUCell(rng, co_dim + cfg.ext_input_dim, cfg.gen_dim, cfg.cell_clip, encoder_init=False)
        self.factor_readout = PopulationLinear(rng, cfg.gen_dim, cfg.fac_dim, bias=False, normalized=True)

    def forward(
        self,
        ic_sample: torch.Tensor,
        ci: torch.Tensor | None,
        ext_input: torch.Tensor | None,
        dropout_rate: torch.Tensor,
        rng: MemberRNG,
        training: bool,
        sample: bool,
    ) -> DecoderStates:
        """ic_sample (P, B, ic_dim); ci (P, B, T, 2 ci_enc_dim) or None; ext_input (1 or P, B, T, E) or None.

        Everything that does not depend on the previous step is computed for all steps at once (generator side,
        then controller side: the order of the random draws), then the time loop runs."""
        gen = self._generator_inputs(ic_sample, ext_input, dropout_rate, rng, training, ci is not None)
        con = (
            None
            if ci is None
            else self._controller_inputs(ci, ic_sample.shape[:2], dropout_rate, rng, training, sample)
        )
        outputs = decode(DecoderInputs(gen, con, self.cfg.cell_clip), self.core)
        gen_states, factors, con_states, co_means, co_stds, gen_inputs = (out.transpose(1, 2) for out in outputs)
        return DecoderStates(gen.gen_init, gen_states, factors, con_states, co_means, co_stds, gen_inputs)

    def _generator_inputs(self, ic_sample, ext_input, dropout_rate, rng, training, use_con) -> GeneratorSide:
        """The generator's side of the loop: gen_init, factor0 (the factor read from gen_init), gen_in_proj
        (P, T, B, 3H: bias + external-input part), gen_w_co, the recurrent weights, factor_w, the step masks."""
        cfg = self.cfg
        members, batch = ic_sample.shape[:2]
        steps = cfg.recon_seq_len
        co_dim = cfg.co_dim if use_con else 0
        gen_init = self.ic_to_gen(ic_sample)
        factor_w = self.factor_readout.effective_weight()
        factor0 = torch.bmm(member_dropout(gen_init, dropout_rate, rng, training), factor_w)
        gen_w_ih = self.gen_cell.weight_ih
        gen_in_proj = self.gen_cell.bias.unsqueeze(1).unsqueeze(1).expand(members, batch, steps, -1)
        if cfg.ext_input_dim > 0:
            ext = member_dropout(ext_input, dropout_rate, rng, training)
            gen_in_proj = gen_in_proj + torch.matmul(ext.expand(members, -1, -1, -1), gen_w_ih[:, None, co_dim:])
        gen_in_proj = gen_in_proj.transpose(1, 2)  # the loop's layout: (P, T, B, 3H)
        gen_w_co = gen_w_ih[:, :co_dim].contiguous()
        gen_zr, gen_n = self.gen_cell.split_recurrent()
        gen_mask = self._step_masks(dropout_rate, rng, training, steps, batch, cfg.gen_dim)
        return GeneratorSide(gen_init, factor0, gen_in_proj, gen_w_co, gen_zr, gen_n, factor_w, gen_mask)

    def _controller_inputs(self, ci, members_batch, dropout_rate, rng, training, sample) -> ControllerSide:
        """The controller's side of the loop: con_h0, con_in_proj (P, T, B, 3H: bias + ci part), con_w_fac, the
        recurrent weights, co_w, co_b, the step masks and the controller-output noise (None unless sampling)."""
        cfg = self.cfg
        (members, batch), steps = members_batch, cfg.recon_seq_len
        ci_dim = 2 * cfg.ci_enc_dim
        con_w_ih = self.con_cell.weight_ih
        con_in_proj = (
            project(
                self.con_cell.bias.unsqueeze(1),
                member_dropout(ci, dropout_rate, rng, training).reshape(members, -1, ci_dim),
                con_w_ih[:, :ci_dim],
                self.core,
            )
            .reshape(members, batch, steps, -1)
            .transpose(1, 2)
        )
        con_w_fac = con_w_ih[:, ci_dim:].contiguous()
        con_zr, con_n = self.con_cell.split_recurrent()
        co_w, co_b = self.co_linear.weight, self.co_linear.bias
        con_mask = self._step_masks(dropout_rate, rng, training, steps, batch, cfg.fac_dim)
        co_noise = rng.normal(steps, batch, cfg.co_dim) if sample else None
        con_h0 = self.con_h0.unsqueeze(1).expand(members, batch, cfg.con_dim)
        return ControllerSide(con_h0, con_in_proj, con_w_fac, con_zr, con_n, co_w, co_b, con_mask, co_noise)

    @staticmethod
    def _step_masks(rate: torch.Tensor, rng: MemberRNG, training: bool, steps: int, batch: int, dim: int):
        """Dropout masks for every step drawn up front, (P, T, B, dim); None when not training."""
        if not training:
            return None
        return dropout_mask(rate, rng, (steps, batch, dim))
