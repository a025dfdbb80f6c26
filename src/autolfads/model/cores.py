"""The recurrent core (train.recurrent_core): which implementation runs the LFADS time loops. Every choice between
them is made here, in `pick_core` and the three dispatchers below; the model's modules call only these.

    autograd  `reference.py`'s equations, differentiated by autograd: the reference, and any device
    manual    `manual_backward.py`: the same loops unrecorded, with a hand-written backward (fast)
    cpp       the manual core's loops and input projections in C++ (`cpp_loops.py`; CPU only, faster)
    auto      (the setting's default) cpp where it builds, else manual, with one line saying why
"""

from typing import Literal

import torch

from ..errors import ConfigError
from .cpp_loops import cpp_extension, why_not_cpp
from .decoder_inputs import DecoderInputs
from .manual_backward import CppProjection, ManualDecoder, ManualGRUSequence
from .reference import decode as reference_decode
from .reference import gru_sequence as reference_gru_sequence

Core = Literal["autograd", "manual", "cpp"]  # train.recurrent_core, once auto is resolved


def pick_core(setting: str, device: torch.device) -> tuple[Core, str | None]:
    """The core train.recurrent_core `setting` means on `device`; and, when auto could not have cpp, one line
    saying why (the caller shows it)."""
    if setting == "cpp":
        if device.type != "cpu":
            raise ConfigError(f"train.recurrent_core cpp runs on a CPU; on {device.type} use manual (or auto)")
        cpp_extension()  # built (or loaded) now: a missing compiler is an error before training starts
        return "cpp", None
    if setting != "auto":
        return setting, None  # type: ignore[return-value]
    why = why_not_cpp(device.type)
    if why is None:
        return "cpp", None
    return "manual", f"recurrent core: manual (python loops), not cpp (train.recurrent_core auto): {why}"


def project(bias: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, core: Core) -> torch.Tensor:
    """An input projection of whole sequences: bias (G, 1, N) + x (G, M, K) @ weight (G, K, N)."""
    if core == "cpp":
        return CppProjection.apply(bias, x, weight)
    return torch.baddbmm(bias, x, weight)


def gru_sequence(
    x_proj: torch.Tensor, h0: torch.Tensor, w_zr: torch.Tensor, w_n: torch.Tensor, clip: float, core: Core
) -> torch.Tensor:
    """A clipped GRU over time: x_proj (G, T, B, 3H), h0 (G, B, H) -> states (G, T, B, H)."""
    if core == "autograd":
        return reference_gru_sequence(x_proj, h0, w_zr, w_n, clip)
    return ManualGRUSequence.apply(x_proj, h0, w_zr, w_n, clip, core == "cpp")


def decode(inputs: DecoderInputs, core: Core) -> tuple[torch.Tensor, ...]:
    """The decoder's time loop: gen_states, factors, con_states, co_means, co_stds, gen_inputs, member-major
    (P, T, B, .)."""
    if core == "autograd":
        return reference_decode(inputs)
    return ManualDecoder.apply(*inputs.flat(), core == "cpp")
