"""LFADS, top to bottom: encoders -> IC/controller posteriors -> generator -> factors -> rates.

    data [--session read-in] --dropout--> IC encoder --> q(ic) --sample--> gen_init
                                       `-> CI encoder --> ci_t --+
    controller_t(concat(ci_t, factor_{t-1})) --> q(co_t) --sample--> generator_t --> factor_t --> session read-out

With several sessions (model.sessions) each has its own read-in to the shared input space and its own read-out;
one session's model reads its neurons directly and has one read-out.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from .cores import Core
from .decoder import Decoder, DecoderStates
from .encoder import Encoder
from .population import MemberRNG, PopulationLinear, member_dropout
from .priors import AutoregressivePrior, GaussianPrior
from .readin_readout import SessionInit
from .reconstruction import make_reconstruction


@dataclass
class LFADSOutput:
    output_params: torch.Tensor  # (P, B, T, N, n_params): e.g. Poisson log-rates
    rates: torch.Tensor  # (P, B, T, N): distribution means
    ic_mean: torch.Tensor  # (P, B, ic_dim)
    ic_std: torch.Tensor
    states: DecoderStates
    kl_ic: torch.Tensor  # (P,)
    kl_co: torch.Tensor  # (P,)


class LFADS(nn.Module):
    """P independent LFADS models; member p is initialised and driven by the generator seeded with seeds[p].

    core: how the recurrent loops run (train.recurrent_core once auto is resolved: "autograd", "manual" or "cpp";
    `cores.py` says what each is).
    """

    def __init__(
        self, cfg: ModelConfig, member_seeds: Sequence[int], device: torch.device | str = "cpu", core: Core = "manual"
    ):
        super().__init__()
        self.cfg = cfg
        self.rng = MemberRNG(member_seeds, device)
        self.reconstruction = make_reconstruction(cfg)
        sessions = [cfg.session(s) for s in range(cfg.n_sessions)]
        self.readin = None
        if cfg.multisession:
            self.readin = nn.ModuleList(
                PopulationLinear(self.rng, session.encod_dim, cfg.input_dim) for session in sessions
            )
            self.readin.requires_grad_(cfg.train_readin)
        self.encoder = Encoder(cfg, self.rng, core)
        self.decoder = Decoder(cfg, self.rng, core)
        self.readout = nn.ModuleList(
            PopulationLinear(self.rng, cfg.fac_dim, session.recon_dim * self.reconstruction.n_params)
            for session in sessions
        )
        self.ic_prior = GaussianPrior(self.rng, cfg.ic_dim, cfg.ic_prior_var)
        self.co_prior = (
            AutoregressivePrior(self.rng, cfg.co_dim, cfg.co_prior_tau, cfg.co_prior_nvar)
            if cfg.use_controller
            else None
        )

    @property
    def population_size(self) -> int:
        return len(self.rng)

    def forward(
        self,
        encod: torch.Tensor,
        dropout_rate: torch.Tensor,
        ext_input: torch.Tensor | None = None,
        sample: bool | None = None,
        session: int = 0,
    ) -> LFADSOutput:
        """encod: (B, T_enc, N_enc) shared by all members, or (P, B, T_enc, N_enc) per member (e.g. after
        coordinated dropout), all trials of one `session`. dropout_rate: (P,). ext_input: (B, T_recon, E).
        Posteriors are sampled when `sample` (default: in training mode), else their means are used."""
        sample = self.training if sample is None else sample
        return self.decode(*self.encode(encod, dropout_rate, session), ext_input, dropout_rate, sample, session)

    def forward_sessions(
        self,
        encods: Sequence[torch.Tensor],
        sessions: Sequence[int],
        dropout_rate: torch.Tensor,
        ext_inputs: Sequence[torch.Tensor | None],
        sample: bool | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """A batch that mixes sessions in ONE pass of the shared encoders and decoder: each part (the trials of
        sessions[i]) through its session's read-in, all parts together through the core, each part's factors
        through its session's read-out. -> output params per part, and kl_ic, kl_co (P,) over all trials."""
        sample = self.training if sample is None else sample
        data = torch.cat([self.read_in(encod, session) for encod, session in zip(encods, sessions, strict=True)], dim=1)
        ext_input = None if ext_inputs[0] is None else torch.cat(list(ext_inputs), dim=0)
        ic_mean, ic_std, ci = self._encode(data, dropout_rate)
        states, kl_ic, kl_co = self._generate(ic_mean, ic_std, ci, ext_input, dropout_rate, sample)
        factors = states.factors.split([encod.shape[-3] for encod in encods], dim=1)
        return [self.read_out(part, session) for part, session in zip(factors, sessions, strict=True)], kl_ic, kl_co

    def encode(self, encod: torch.Tensor, dropout_rate: torch.Tensor, session: int = 0):
        """-> ic_mean, ic_std (P, B, ic_dim), controller inputs (P, B, T_recon, 2 ci_enc_dim) or None."""
        return self._encode(self.read_in(encod, session), dropout_rate)

    def decode(self, ic_mean, ic_std, ci, ext_input, dropout_rate, sample: bool, session: int = 0) -> LFADSOutput:
        states, kl_ic, kl_co = self._generate(ic_mean, ic_std, ci, ext_input, dropout_rate, sample)
        params = self.read_out(states.factors, session)
        return LFADSOutput(params, self.reconstruction.mean(params), ic_mean, ic_std, states, kl_ic, kl_co)

    def read_in(self, encod: torch.Tensor, session: int) -> torch.Tensor:
        """(P or 1, B, T, N_session) -> what the encoders read, (P, B, T, input_dim)."""
        encod = encod.expand(self.population_size, *encod.shape[-3:])
        return encod if self.readin is None else self.readin[session](encod)

    def read_out(self, factors: torch.Tensor, session: int) -> torch.Tensor:
        """(P, B, T, fac_dim) -> the session's output parameters (P, B, T, N_session, n_params)."""
        readout, n_params = self.readout[session], self.reconstruction.n_params
        return readout(factors).unflatten(-1, (readout.out_features // n_params, n_params))

    def _encode(self, data: torch.Tensor, dropout_rate: torch.Tensor):
        data = member_dropout(data, dropout_rate, self.rng, self.training)
        return self.encoder(data, dropout_rate, self.rng, self.training)

    def _generate(
        self, ic_mean, ic_std, ci, ext_input, dropout_rate, sample: bool
    ) -> tuple[DecoderStates, torch.Tensor, torch.Tensor]:
        """Sample (or take the mean of) the initial condition, run controller and generator; the KL terms."""
        rng = self.rng
        ic = ic_mean + ic_std * rng.normal(*ic_mean.shape[1:]) if sample else ic_mean
        ext = ext_input.unsqueeze(0) if ext_input is not None else None
        states = self.decoder(ic, ci, ext, dropout_rate, rng, self.training, sample)
        kl_ic = self.ic_prior.kl(ic_mean, ic_std)
        if self.co_prior is None:
            kl_co = torch.zeros_like(kl_ic)
        elif sample:
            kl_co = self.co_prior.kl(states.co_means, states.co_stds, states.gen_inputs)
        else:
            kl_co = self.co_prior.expected_kl(states.co_means, states.co_stds)
        return states, kl_ic, kl_co

    @torch.no_grad()
    def init_sessions(self, inits: Sequence[SessionInit]) -> None:
        """Start every member's read-ins and read-outs at the given (PCR) values; the read-outs' other output
        parameters keep their random start."""
        if self.readin is None or len(inits) != len(self.readin):
            raise ValueError(f"{len(inits)} session inits for a model of {self.cfg.n_sessions} session(s)")
        for readin, readout, init in zip(self.readin, self.readout, inits, strict=True):
            readin.weight.copy_(torch.as_tensor(init.readin_weight, dtype=readin.weight.dtype).expand_as(readin.weight))
            readin.bias.copy_(torch.as_tensor(init.readin_bias, dtype=readin.bias.dtype).expand_as(readin.bias))
            n_params = init.readout_weight.shape[-1]
            weight = readout.weight.unflatten(-1, (-1, n_params))[..., init.mean_param]
            bias = readout.bias.unflatten(-1, (-1, n_params))[..., init.mean_param]
            weight.copy_(
                torch.as_tensor(init.readout_weight[..., init.mean_param], dtype=weight.dtype).expand_as(weight)
            )
            bias.copy_(torch.as_tensor(init.readout_bias[..., init.mean_param], dtype=bias.dtype).expand_as(bias))

    def recurrent_kernels(self) -> dict[str, list[torch.Tensor]]:
        kernels = {
            "ic_enc": [self.encoder.ic_enc.forward_cell.weight_hh, self.encoder.ic_enc.backward_cell.weight_hh],
            "gen": [self.decoder.gen_cell.weight_hh],
            "ci_enc": [],
            "con": [],
        }
        if self.cfg.use_controller:
            kernels["ci_enc"] = [
                self.encoder.ci_enc.forward_cell.weight_hh,
                self.encoder.ci_enc.backward_cell.weight_hh,
            ]
            kernels["con"] = [self.decoder.con_cell.weight_hh]
        return kernels

    def l2_penalty(self, scales: dict[str, torch.Tensor]) -> torch.Tensor:
        """sum_k scale_k * 0.5 * ||W_k||^2 / (elements of the kernels with scale_k > 0), per member (P,)."""
        penalty = torch.zeros(self.population_size, device=self.rng.device)
        size = torch.zeros_like(penalty)
        for group, kernels in self.recurrent_kernels().items():
            scale = scales[group]
            for kernel in kernels:
                penalty = penalty + scale * 0.5 * kernel.square().flatten(1).sum(1)
                size = size + (scale > 0) * kernel[0].numel()
        return penalty / size.clamp_min(1)
