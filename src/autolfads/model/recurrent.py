"""The LFADS recurrent cell's parameters (a clipped GRU: the equations are in `reference.py`) and the encoders'
bidirectional GRU. Input projections of whole sequences are computed up front in one matmul; only h W_hh stays
in the loop, which runs on the recurrent core (`cores.py`)."""

import torch
from torch import nn

from .cores import Core, gru_sequence, project
from .population import MemberRNG, member_normal


class ClippedGRUCell(nn.Module):
    """Population GRU cell. weight_ih: (P, in, 3H), weight_hh: (P, H, 3H), bias: (P, 3H); gate order z, r, n."""

    def __init__(self, rng: MemberRNG, input_size: int, hidden_size: int, clip: float, encoder_init: bool):
        super().__init__()
        self.input_size, self.hidden_size, self.clip = input_size, hidden_size, clip
        if encoder_init:  # encoder cells: N(0, 1/(in + hidden)) for both kernels
            std_ih = std_hh = (input_size + hidden_size) ** -0.5
        else:  # decoder cells: N(0, 1/fan_in)
            std_ih = input_size**-0.5 if input_size > 0 else 0.0
            std_hh = hidden_size**-0.5
        self.weight_ih = nn.Parameter(member_normal(rng, (input_size, 3 * hidden_size), std_ih))
        self.weight_hh = nn.Parameter(member_normal(rng, (hidden_size, 3 * hidden_size), std_hh))
        bias = torch.zeros(len(rng), 3 * hidden_size, device=rng.device)
        bias[:, : 2 * hidden_size] = 1.0  # update and reset gates start open
        self.bias = nn.Parameter(bias)

    def split_recurrent(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_hz|W_hr: (P, H, 2H), W_hn: (P, H, H)), contiguous so the loop's bmm does not copy."""
        hidden = self.hidden_size
        return self.weight_hh[..., : 2 * hidden].contiguous(), self.weight_hh[..., 2 * hidden :].contiguous()


class BidirectionalGRU(nn.Module):
    """Forward and backward clipped GRUs with learnable initial states h0: (P, 2, H).

    Both directions run in the same time loop as 2P groups of one batched matmul: group 2p is member p's
    forward direction, 2p + 1 its backward one, each a (T, B, .) block of the group-major sequences.
    """

    def __init__(self, rng: MemberRNG, input_size: int, hidden_size: int, clip: float, core: Core = "manual"):
        super().__init__()
        self.hidden_size, self.clip, self.core = hidden_size, clip, core
        self.forward_cell = ClippedGRUCell(rng, input_size, hidden_size, clip, encoder_init=True)
        self.backward_cell = ClippedGRUCell(rng, input_size, hidden_size, clip, encoder_init=True)
        self.h0 = nn.Parameter(torch.zeros(len(rng), 2, hidden_size, device=rng.device))

    def project_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """x: (P, B, T, in) -> x W_ih + b of both directions, group-major (2P, T, B, 3H), the backward
        direction's in reversed time: one matmul over the (small) input, stacked time-major."""
        members, batch, steps, n_in = x.shape
        time_major = x.transpose(1, 2)
        sequences = torch.stack([time_major, time_major.flip(1)], 1).reshape(2 * members, steps * batch, n_in)
        cells = (self.forward_cell, self.backward_cell)
        weight = torch.stack([cell.weight_ih for cell in cells], 1).flatten(0, 1)
        bias = torch.stack([cell.bias for cell in cells], 1).reshape(2 * members, 1, -1)
        x_proj = project(bias, sequences, weight, self.core)
        return x_proj.reshape(2 * members, steps, batch, 3 * self.hidden_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (P, B, T, in) -> forward states (P, B, T, H), backward states (P, B, T, H) aligned to input
        time, and the final states concat(last forward, first backward): (P, B, 2H)."""
        members, batch, steps, _ = x.shape
        hidden = self.hidden_size
        (fz, fn), (bz, bn) = self.forward_cell.split_recurrent(), self.backward_cell.split_recurrent()
        w_zr = torch.stack([fz, bz], 1).reshape(2 * members, hidden, 2 * hidden)
        w_n = torch.stack([fn, bn], 1).reshape(2 * members, hidden, hidden)
        h0 = self.h0.reshape(2 * members, 1, hidden).expand(2 * members, batch, hidden)
        x_proj = self.project_inputs(x)
        states = gru_sequence(x_proj, h0, w_zr, w_n, self.clip, self.core).reshape(members, 2, steps, batch, hidden)
        forward_states, backward_states = states[:, 0].transpose(1, 2), states[:, 1].flip(1).transpose(1, 2)
        final = torch.cat([states[:, 0, -1], states[:, 1, -1]], dim=-1)
        return forward_states, backward_states, final
