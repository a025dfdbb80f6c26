"""The fast recurrent core: hand-written backward passes for the LFADS time loops.

Autograd records a dozen small nodes per time step for each of the four recurrent networks and computes
the weight gradients step by step. Here the forward loops run without recording and keep what the
backward needs (gates, clip masks); the backward loops walk time in reverse with plain tensor ops, and all
weight gradients are then one batched matmul over every step. The equations are those of
`recurrent.gru_step` and of the eager decoder loop; tests check values and gradients against them.
"""

import torch


def _gru_forward_step(x_proj, h, w_zr, w_n, clip, gates_out, inside_out):
    """One clipped-GRU step that also records its gates (z, r, n) and where the clamp passes gradient."""
    hidden = h.shape[-1]
    x_zr, x_n = x_proj.split([2 * hidden, hidden], dim=-1)
    zr = torch.sigmoid(torch.baddbmm(x_zr, h, w_zr))
    z, r = zr.chunk(2, dim=-1)
    n = torch.tanh(torch.baddbmm(x_n, r * h, w_n))
    update = n + z * (h - n)
    inside_out.copy_(update.abs() <= clip)
    gates_out[..., : 2 * hidden] = zr
    gates_out[..., 2 * hidden :] = n
    return torch.clamp(update, -clip, clip)


def _gru_backward_step(d_h, h_prev, gates, inside, w_zr_t, w_n_t, d_x_out):
    """Given dL/dh_t, write dL/dx_proj_t into d_x_out and return dL/dh_{t-1} through this step."""
    hidden = h_prev.shape[-1]
    z, r, n = gates.split(hidden, dim=-1)
    d_update = d_h * inside
    d_pre_n = d_update * (1 - z) * (1 - n * n)
    d_rh = torch.bmm(d_pre_n, w_n_t)
    d_x_out[..., :hidden] = d_update * (h_prev - n) * z * (1 - z)
    d_x_out[..., hidden : 2 * hidden] = d_rh * h_prev * r * (1 - r)
    d_x_out[..., 2 * hidden :] = d_pre_n
    return torch.baddbmm(d_update * z + d_rh * r, d_x_out[..., : 2 * hidden], w_zr_t)


def _outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum over time and batch of a_t^T b_t: a (T, G, B, i), b (T, G, B, o) -> (G, i, o), one matmul."""
    steps, groups, batch = a.shape[:3]
    return torch.bmm(a.transpose(0, 1).reshape(groups, steps * batch, -1).transpose(1, 2), b.transpose(0, 1).reshape(groups, steps * batch, -1))


def _recurrent_grads(previous, gates, d_x):
    """Gradients of W_hz|W_hr and W_hn from all steps: previous states, gates and input gradients (T, G, B, .)."""
    hidden = previous.shape[-1]
    return _outer(previous, d_x[..., : 2 * hidden]), _outer(gates[..., hidden : 2 * hidden] * previous, d_x[..., 2 * hidden :])


def _step_buffers(like: torch.Tensor, steps: int, hidden: int):
    shape = (steps, *like.shape[:-1])
    # The clamp mask is kept as floats: multiplying by a bool tensor converts it on every use.
    return like.new_empty(*shape, hidden), like.new_empty(*shape, 3 * hidden), like.new_empty(*shape, hidden)


class FusedGRUSequence(torch.autograd.Function):
    """x_proj (T, G, B, 3H) = x W_ih + b, h0 (G, B, H), w_zr (G, H, 2H), w_n (G, H, H) -> states (T, G, B, H)."""

    @staticmethod
    def forward(ctx, x_proj, h0, w_zr, w_n, clip):
        states, gates, inside = _step_buffers(h0, x_proj.shape[0], h0.shape[-1])
        h = h0
        for t in range(x_proj.shape[0]):
            h = states[t] = _gru_forward_step(x_proj[t], h, w_zr, w_n, clip, gates[t], inside[t])
        ctx.save_for_backward(h0, w_zr, w_n, states, gates, inside)
        return states

    @staticmethod
    def backward(ctx, d_states):
        h0, w_zr, w_n, states, gates, inside = ctx.saved_tensors
        previous = torch.cat([h0.expand_as(states[0]).unsqueeze(0), states[:-1]])
        d_x = torch.empty_like(gates)
        w_zr_t, w_n_t = w_zr.transpose(1, 2), w_n.transpose(1, 2)
        dh = torch.zeros_like(previous[0])
        for t in range(states.shape[0] - 1, -1, -1):
            dh = _gru_backward_step(d_states[t] + dh, previous[t], gates[t], inside[t], w_zr_t, w_n_t, d_x[t])
        return (d_x, dh, *_recurrent_grads(previous, gates, d_x), None)


class FusedDecoder(torch.autograd.Function):
    """The controller + generator loop of `decoder.eager_decode`, time-major (T, P, B, .) tensors.

    Inputs: gen_init, factor0 (the factor read from gen_init), con_h0, con_in_proj (ci part + bias),
    gen_in_proj (external-input part + bias), con_w_fac, con_zr, con_n, co_w, co_b, gen_w_co, gen_zr,
    gen_n, factor_w, con_mask, gen_mask, co_noise, clip. Without a controller the con_* / co_* inputs are
    None and gen_w_co has zero rows. Masks and noise are None when not training / not sampling.
    Outputs: gen_states, factors, con_states, co_means, co_stds, gen_inputs.
    """

    @staticmethod
    def forward(ctx, gen_init, factor0, con_h0, con_in_proj, gen_in_proj, con_w_fac, con_zr, con_n, co_w, co_b, gen_w_co, gen_zr, gen_n, factor_w, con_mask, gen_mask, co_noise, clip):
        steps = gen_in_proj.shape[0]
        use_con = con_in_proj is not None
        co_dim = gen_w_co.shape[1]
        gen_states, gen_gates, gen_inside = _step_buffers(gen_init, steps, gen_init.shape[-1])
        factors = factor0.new_empty(steps, *factor0.shape)
        empty = gen_init.new_empty(steps, *gen_init.shape[:-1], 0)
        con_states = con_gates = con_inside = co_means = co_stds = gen_inputs = empty
        if use_con:
            con_states, con_gates, con_inside = _step_buffers(con_h0, steps, con_h0.shape[-1])
            co_means, co_stds, gen_inputs = (gen_init.new_empty(steps, *gen_init.shape[:-1], co_dim) for _ in range(3))
        gen_h, con_h, factor = gen_init, con_h0, factor0
        for t in range(steps):
            gen_x = gen_in_proj[t]
            if use_con:
                con_factor = factor if con_mask is None else factor * con_mask[t]
                con_x = torch.baddbmm(con_in_proj[t], con_factor, con_w_fac)
                con_h = con_states[t] = _gru_forward_step(con_x, con_h, con_zr, con_n, clip, con_gates[t], con_inside[t])
                co_mean, co_logvar = torch.baddbmm(co_b.unsqueeze(1), con_h, co_w).split(co_dim, dim=-1)
                co_std = torch.exp(0.5 * co_logvar)
                co = co_mean + co_std * co_noise[t] if co_noise is not None else co_mean
                co_means[t], co_stds[t], gen_inputs[t] = co_mean, co_std, co
                gen_x = torch.baddbmm(gen_x, co, gen_w_co)
            gen_h = gen_states[t] = _gru_forward_step(gen_x, gen_h, gen_zr, gen_n, clip, gen_gates[t], gen_inside[t])
            factor = factors[t] = torch.bmm(gen_h if gen_mask is None else gen_h * gen_mask[t], factor_w)
        ctx.use_con = use_con
        ctx.save_for_backward(gen_init, factor0, con_h0, gen_states, gen_gates, gen_inside, factors, con_states, con_gates, con_inside, co_stds, gen_inputs,
                              con_w_fac, con_zr, con_n, co_w, gen_w_co, gen_zr, gen_n, factor_w, con_mask, gen_mask, co_noise)
        return gen_states, factors, con_states, co_means, co_stds, gen_inputs

    @staticmethod
    def backward(ctx, d_gen_states, d_factors, d_con_states, d_co_means, d_co_stds, d_gen_inputs):
        (gen_init, factor0, con_h0, gen_states, gen_gates, gen_inside, factors, con_states, con_gates, con_inside, co_stds, gen_inputs,
         con_w_fac, con_zr, con_n, co_w, gen_w_co, gen_zr, gen_n, factor_w, con_mask, gen_mask, co_noise) = ctx.saved_tensors
        steps = gen_states.shape[0]
        gen_previous = torch.cat([gen_init.unsqueeze(0), gen_states[:-1]])
        d_gen_x = torch.empty_like(gen_gates)
        d_factor_all = torch.empty_like(factors)
        d_gen_h = torch.zeros_like(gen_init)
        d_factor_carry = torch.zeros_like(factor0)
        gen_zr_t, gen_n_t, factor_w_t, gen_w_co_t = (w.transpose(1, 2) for w in (gen_zr, gen_n, factor_w, gen_w_co))
        if ctx.use_con:
            con_previous = torch.cat([con_h0.expand_as(con_states[0]).unsqueeze(0), con_states[:-1]])
            d_con_x = torch.empty_like(con_gates)
            d_co_params = gen_init.new_empty(*gen_inputs.shape[:-1], 2 * gen_inputs.shape[-1])
            d_con_h = torch.zeros_like(con_previous[0])
            con_zr_t, con_n_t, co_w_t, con_w_fac_t = (w.transpose(1, 2) for w in (con_zr, con_n, co_w, con_w_fac))
            co_dim = gen_inputs.shape[-1]
        for t in range(steps - 1, -1, -1):
            d_factor = d_factor_all[t] = d_factors[t] + d_factor_carry
            d_gen_in = torch.bmm(d_factor, factor_w_t)
            d_gen = d_gen_states[t] + d_gen_h + (d_gen_in if gen_mask is None else d_gen_in * gen_mask[t])
            d_gen_h = _gru_backward_step(d_gen, gen_previous[t], gen_gates[t], gen_inside[t], gen_zr_t, gen_n_t, d_gen_x[t])
            if ctx.use_con:
                d_co = torch.baddbmm(d_gen_inputs[t], d_gen_x[t], gen_w_co_t)
                d_std = d_co_stds[t] + (d_co * co_noise[t] if co_noise is not None else 0)
                d_co_params[t, ..., :co_dim] = d_co + d_co_means[t]
                d_co_params[t, ..., co_dim:] = d_std * 0.5 * co_stds[t]
                d_con = torch.baddbmm(d_con_states[t] + d_con_h, d_co_params[t], co_w_t)
                d_con_h = _gru_backward_step(d_con, con_previous[t], con_gates[t], con_inside[t], con_zr_t, con_n_t, d_con_x[t])
                d_con_factor = torch.bmm(d_con_x[t], con_w_fac_t)
                d_factor_carry = d_con_factor if con_mask is None else d_con_factor * con_mask[t]

        gen_out = gen_states if gen_mask is None else gen_states * gen_mask
        d_factor_w = _outer(gen_out, d_factor_all)
        d_gen_zr, d_gen_n = _recurrent_grads(gen_previous, gen_gates, d_gen_x)
        grads = dict(gen_init=d_gen_h, factor0=d_factor_carry, gen_in_proj=d_gen_x, gen_zr=d_gen_zr, gen_n=d_gen_n, factor_w=d_factor_w)
        if ctx.use_con:
            con_factors = torch.cat([factor0.unsqueeze(0), factors[:-1]])
            if con_mask is not None:
                con_factors = con_factors * con_mask
            d_con_zr, d_con_n = _recurrent_grads(con_previous, con_gates, d_con_x)
            grads.update(
                con_h0=d_con_h, con_in_proj=d_con_x, con_w_fac=_outer(con_factors, d_con_x), con_zr=d_con_zr, con_n=d_con_n,
                co_w=_outer(con_states, d_co_params), co_b=d_co_params.sum((0, 2)), gen_w_co=_outer(gen_inputs, d_gen_x),
            )
        else:
            grads["gen_w_co"] = torch.zeros_like(gen_w_co)
        order = ("gen_init", "factor0", "con_h0", "con_in_proj", "gen_in_proj", "con_w_fac", "con_zr", "con_n", "co_w", "co_b", "gen_w_co", "gen_zr", "gen_n", "factor_w")
        return (*(grads.get(name) for name in order), None, None, None, None)
