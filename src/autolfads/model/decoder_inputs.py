"""What the decoder's time loop takes, named once for its three cores (autograd, manual, cpp).

Sequences are member-major (P, T, B, .), states (P, B, .), weights (P, in, out). Masks are None when not
training, the controller-output noise None when not sampling; without a controller there is no ControllerSide
and gen_w_co has zero rows. The hand-written backward is a torch.autograd.Function, which takes tensors only as
plain arguments: `flat` / `from_flat` are the one packing between this structure and that argument list.
"""

from typing import NamedTuple

import torch


class GeneratorSide(NamedTuple):
    gen_init: torch.Tensor  # the generator's initial state (P, B, gen)
    factor0: torch.Tensor  # the factor read from gen_init (P, B, fac): what the controller reads at step 0
    gen_in_proj: torch.Tensor  # bias + external-input part of the generator's input projection (P, T, B, 3 gen)
    gen_w_co: torch.Tensor  # controller output -> generator input weights (P, co, 3 gen)
    gen_zr: torch.Tensor  # recurrent weights of the z|r gates (P, gen, 2 gen)
    gen_n: torch.Tensor  # recurrent weights of the candidate (P, gen, gen)
    factor_w: torch.Tensor  # the factor read-out (P, gen, fac)
    gen_mask: torch.Tensor | None  # dropout of the generator state's copy read into the factors (P, T, B, gen)


class ControllerSide(NamedTuple):
    con_h0: torch.Tensor  # the controller's initial state (P, B, con)
    con_in_proj: torch.Tensor  # bias + controller-input (ci) part of its input projection (P, T, B, 3 con)
    con_w_fac: torch.Tensor  # factor -> controller input weights (P, fac, 3 con)
    con_zr: torch.Tensor
    con_n: torch.Tensor
    co_w: torch.Tensor  # controller state -> output means | log-variances (P, con, 2 co)
    co_b: torch.Tensor  # (P, 2 co)
    con_mask: torch.Tensor | None  # dropout of the factor the controller reads (P, T, B, fac)
    co_noise: torch.Tensor | None  # standard normal draws of the controller outputs (P, T, B, co)


# The autograd.Function's argument order (its backward returns the gradients in it); clip follows.
FLAT_ORDER = (
    "gen_init",
    "factor0",
    "con_h0",
    "con_in_proj",
    "gen_in_proj",
    "con_w_fac",
    "con_zr",
    "con_n",
    "co_w",
    "co_b",
    "gen_w_co",
    "gen_zr",
    "gen_n",
    "factor_w",
    "con_mask",
    "gen_mask",
    "co_noise",
)


class DecoderInputs(NamedTuple):
    gen: GeneratorSide
    con: ControllerSide | None
    clip: float  # the recurrent states' clip (model.cell_clip)

    def flat(self) -> tuple:
        """The tensors in FLAT_ORDER (None for a missing controller's), then clip."""
        con = self.con._asdict() if self.con is not None else dict.fromkeys(ControllerSide._fields)
        fields = {**self.gen._asdict(), **con}
        return (*(fields[name] for name in FLAT_ORDER), self.clip)

    @classmethod
    def from_flat(cls, flat: tuple) -> "DecoderInputs":
        """The inverse of `flat`."""
        fields = dict(zip(FLAT_ORDER, flat[:-1], strict=True))
        gen = GeneratorSide(**{name: fields[name] for name in GeneratorSide._fields})
        has_con = fields["con_in_proj"] is not None
        con = ControllerSide(**{name: fields[name] for name in ControllerSide._fields}) if has_con else None
        return cls(gen, con, flat[-1])
