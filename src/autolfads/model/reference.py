"""The LFADS recurrent equations, written plainly and differentiated by autograd: the `autograd` recurrent core,
and the reference the `manual` core's hand-written backward (`manual_backward.py`) and the C++ loops
(`csrc/loops.cpp`) are tested against.

The clipped GRU cell (TF's reset_after=False, unlike cuDNN's nn.GRU; no hidden-hidden bias):

    z, r = sigmoid(x W_iz + b_z + h W_hz), sigmoid(x W_ir + b_r + h W_hr)
    n    = tanh(x W_in + b_n + (r * h) W_hn)
    h'   = clamp(z * h + (1 - z) * n, -clip, clip)

One decoder step (the controller only when the model has one):

    con_h  = GRU_con([ci_t, factor_{t-1}], con_h)
    co     = mean(con_h) + std(con_h) * noise_t          (the mean when not sampling)
    gen_h  = GRU_gen([co, ext_t], gen_h)
    factor = dropout(gen_h) W_fac

Input projections of whole sequences (x W_i + b) are computed before the loops; only h W_h stays inside.
Every tensor carries a leading group axis G (a member, or a member's direction), so a step is batched matmuls.
"""

import torch

from .decoder_inputs import DecoderInputs


def gru_step(x_proj: torch.Tensor, h: torch.Tensor, w_zr: torch.Tensor, w_n: torch.Tensor, clip: float) -> torch.Tensor:
    """One step for G groups: x_proj (G, B, 3H), h (G, B, H), w_zr (G, H, 2H), w_n (G, H, H)."""
    hidden = h.shape[-1]
    x_zr, x_n = x_proj.split([2 * hidden, hidden], dim=-1)  # split, not slicing: a cheaper backward
    z, r = torch.sigmoid(torch.baddbmm(x_zr, h, w_zr)).chunk(2, dim=-1)
    n = torch.tanh(torch.baddbmm(x_n, r * h, w_n))
    return torch.clamp(n + z * (h - n), -clip, clip)


def gru_sequence(
    x_proj: torch.Tensor, h0: torch.Tensor, w_zr: torch.Tensor, w_n: torch.Tensor, clip: float
) -> torch.Tensor:
    """Run over time: x_proj (G, T, B, 3H), h0 (G, B, H) -> states (G, T, B, H)."""
    states = []
    h = h0
    # unbind: one backward node; indexing x_proj[:, t] would add a full-size zero gradient per step
    for x_t in x_proj.unbind(1):
        h = gru_step(x_t, h, w_zr, w_n, clip)
        states.append(h)
    return torch.stack(states, 1)


def decode(inputs: DecoderInputs) -> tuple[torch.Tensor, ...]:
    """The decoder's time loop: gen_states, factors, con_states, co_means, co_stds, gen_inputs, member-major
    (P, T, B, .); the controller's outputs are empty without a controller."""
    gen, con, clip = inputs
    members, steps, batch = gen.gen_in_proj.shape[:3]
    gen_h, factor = gen.gen_init, gen.factor0
    con_h = con.con_h0 if con is not None else None
    gen_states, factors, con_states, co_means, co_stds, gen_inputs = [], [], [], [], [], []
    # unbind, not [t] indexing: the backward of per-step indexing allocates a full-size gradient each step.
    gen_in_steps = gen.gen_in_proj.unbind(1)
    con_in_steps = con.con_in_proj.unbind(1) if con is not None else None
    for t in range(steps):
        gen_x = gen_in_steps[t]
        if con is not None:
            con_factor = factor if con.con_mask is None else factor * con.con_mask[:, t]
            con_x = torch.baddbmm(con_in_steps[t], con_factor, con.con_w_fac)
            con_h = gru_step(con_x, con_h, con.con_zr, con.con_n, clip)
            co_params = torch.baddbmm(con.co_b.unsqueeze(1), con_h, con.co_w)
            co_mean, co_logvar = co_params.split(gen.gen_w_co.shape[1], dim=-1)
            co_std = torch.exp(0.5 * co_logvar)
            co = co_mean + co_std * con.co_noise[:, t] if con.co_noise is not None else co_mean
            gen_x = torch.baddbmm(gen_x, co, gen.gen_w_co)
            con_states.append(con_h), co_means.append(co_mean), co_stds.append(co_std), gen_inputs.append(co)
        gen_h = gru_step(gen_x, gen_h, gen.gen_zr, gen.gen_n, clip)
        # The carried generator state is never dropped; only its copy going to the factors is.
        factor = torch.bmm(gen_h if gen.gen_mask is None else gen_h * gen.gen_mask[:, t], gen.factor_w)
        gen_states.append(gen_h), factors.append(factor)

    def stack(seq: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(seq, 1) if seq else gen.gen_init.new_zeros(members, steps, batch, 0)

    return stack(gen_states), stack(factors), stack(con_states), stack(co_means), stack(co_stds), stack(gen_inputs)
