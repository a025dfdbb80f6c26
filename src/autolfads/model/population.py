"""Population building blocks: every weight has a leading member axis P.

P independent LFADS models train in one process with batched matrix products (bmm); P = 1 is one model.
Each member draws its random numbers (initialisation, dropout, coordinated dropout, posterior samples)
from its own generator, so a member's run does not depend on how many others share the process.
"""

from collections.abc import Sequence

import torch
from torch import nn


class MemberRNG:
    """One torch.Generator per member; draws return tensors with a leading member axis."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generators = []
        for seed in seeds:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(int(seed))
            self.generators.append(generator)

    def __len__(self) -> int:
        return len(self.generators)

    def uniform(self, *shape: int) -> torch.Tensor:
        return torch.stack([torch.rand(shape, generator=g, device=self.device) for g in self.generators])

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g, device=self.device) for g in self.generators])

    def get_state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def set_state(self, states: Sequence[torch.Tensor]) -> None:
        if len(states) != len(self.generators):
            raise ValueError(f"expected {len(self.generators)} generator states, got {len(states)}")
        for generator, state in zip(self.generators, states):
            generator.set_state(state)


def member_normal(rng: MemberRNG, shape: Sequence[int], std: float) -> torch.Tensor:
    """Initial weights ~ N(0, std^2), drawn member by member: shape (P, *shape)."""
    return rng.normal(*shape) * std


class PopulationLinear(nn.Module):
    """y = x @ W + b for each member. W: (P, in, out) ~ N(0, 1/in), b: (P, out) = 0.

    `normalized` gives the LFADS factor readout: no bias, and each factor's weight vector (over the
    inputs) rescaled to unit L2 norm on every forward pass.
    """

    def __init__(
        self, rng: MemberRNG, in_features: int, out_features: int, bias: bool = True, normalized: bool = False
    ):
        super().__init__()
        self.in_features, self.out_features, self.normalized = in_features, out_features, normalized
        std = in_features**-0.5 if in_features > 0 else 0.0
        self.weight = nn.Parameter(member_normal(rng, (in_features, out_features), std))
        self.bias = nn.Parameter(torch.zeros(len(rng), out_features, device=rng.device)) if bias else None

    def effective_weight(self) -> torch.Tensor:
        if self.normalized:
            return self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (P, ..., in) -> (P, ..., out)."""
        lead = x.shape[:-1]
        flat = x.reshape(lead[0], -1, self.in_features)
        weight = self.effective_weight()
        out = torch.bmm(flat, weight) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), flat, weight)
        return out.reshape(*lead, self.out_features)


def member_dropout(x: torch.Tensor, rate: torch.Tensor, rng: MemberRNG, training: bool) -> torch.Tensor:
    """Inverted dropout with a per-member rate (P,). x: (P or 1, ...) -> (P, ...)."""
    if not training:
        return x
    return x * dropout_mask(rate, rng, x.shape[1:])


def dropout_mask(rate: torch.Tensor, rng: MemberRNG, shape: Sequence[int]) -> torch.Tensor:
    """Scaled keep-mask (P, *shape): 1/(1-rate) where kept, 0 where dropped."""
    keep = (1.0 - rate).reshape(-1, *([1] * len(shape)))
    return (rng.uniform(*shape) < keep).to(keep.dtype) / keep
