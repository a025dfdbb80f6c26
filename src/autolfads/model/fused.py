"""The fast recurrent core: hand-written backward passes for the LFADS time loops.

Autograd records a dozen small nodes per time step for each of the four recurrent networks and computes
the weight gradients step by step. Here the forward loops run without recording and keep what the
backward needs (gates, clip masks); the backward loops walk time in reverse with plain tensor ops, and all
weight gradients are then one batched matmul over every step. The equations are those of
`recurrent.gru_step` and of the eager decoder loop; tests check values and gradients against them.
"""

import torch


def _gru_forward_step(x_proj, h, w_zr, w_n, clip, zr_out, n_out, h_out):
    """One clipped-GRU step writing its gates z|r, n and the new state into the given buffers (no copies)."""
    hidden = h.shape[-1]
    x_zr, x_n = x_proj.split([2 * hidden, hidden], dim=-1)
    torch.baddbmm(x_zr, h, w_zr, out=zr_out).sigmoid_()
    z, r = zr_out.chunk(2, dim=-1)
    torch.baddbmm(x_n, r * h, w_n, out=n_out).tanh_()
    return torch.clamp(n_out + z * (h - n_out), -clip, clip, out=h_out)


def _gru_backward_step(d_h, h_prev, zr, n, inside, w_zr_t, w_n_t, d_zr_out, d_n_out):
    """Given dL/dh_t, write dL/dx_proj_t (its z|r and n parts) and return dL/dh_{t-1} through this step."""
    z, r = zr.chunk(2, dim=-1)
    d_z, d_r = d_zr_out.chunk(2, dim=-1)
    d_update = d_h * inside
    torch.mul(d_update * (1 - z), 1 - n * n, out=d_n_out)
    d_rh = torch.bmm(d_n_out, w_n_t)
    torch.mul(d_update * (h_prev - n), z * (1 - z), out=d_z)
    torch.mul(d_rh * h_prev, r * (1 - r), out=d_r)
    return torch.baddbmm(d_update * z + d_rh * r, d_zr_out, w_zr_t)


def _outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum over time and batch of a_t^T b_t: a (T, G, B, i), b (T, G, B, o) -> (G, i, o), one matmul."""
    steps, groups, batch = a.shape[:3]
    return torch.bmm(
        a.transpose(0, 1).reshape(groups, steps * batch, -1).transpose(1, 2),
        b.transpose(0, 1).reshape(groups, steps * batch, -1),
    )


class _Recurrence:
    """What one recurrent network keeps from its forward loop: states and gates, (T, G, B, .) each."""

    def __init__(self, h0: torch.Tensor, steps: int):
        hidden = h0.shape[-1]
        shape = (steps, *h0.shape[:-1])
        self.h0 = h0
        self.states, self.zr, self.n = (
            h0.new_empty(*shape, hidden),
            h0.new_empty(*shape, 2 * hidden),
            h0.new_empty(*shape, hidden),
        )

    def step(self, t, x_proj, h, w_zr, w_n, clip):
        return _gru_forward_step(x_proj, h, w_zr, w_n, clip, self.zr[t], self.n[t], self.states[t])


def _backward_buffers(states: torch.Tensor, h0: torch.Tensor, clip: float):
    """h_{t-1} for every t, where the clamp passed gradient, and empty input-gradient buffers (z|r and n)."""
    previous = torch.cat([h0.expand_as(states[0]).unsqueeze(0), states[:-1]])
    # |h| < clip  <=>  the update was inside the clamp (up to a tie at exactly +-clip, which has measure zero)
    inside = (states.abs() < clip).to(states.dtype)
    d_zr = states.new_empty(*states.shape[:-1], 2 * states.shape[-1])
    return previous, inside, d_zr, torch.empty_like(states)


def _recurrent_grads(previous, zr, d_zr, d_n):
    """Gradients of W_hz|W_hr and W_hn from all steps at once."""
    hidden = previous.shape[-1]
    return _outer(previous, d_zr), _outer(zr[..., hidden:] * previous, d_n)


class FusedGRUSequence(torch.autograd.Function):
    """x_proj (T, G, B, 3H) = x W_ih + b, h0 (G, B, H), w_zr (G, H, 2H), w_n (G, H, H) -> states (T, G, B, H)."""

    @staticmethod
    def forward(ctx, x_proj, h0, w_zr, w_n, clip):
        rnn = _Recurrence(h0, x_proj.shape[0])
        h = h0
        for t in range(x_proj.shape[0]):
            h = rnn.step(t, x_proj[t], h, w_zr, w_n, clip)
        ctx.clip = clip
        ctx.save_for_backward(h0, w_zr, w_n, rnn.states, rnn.zr, rnn.n)
        return rnn.states

    @staticmethod
    def backward(ctx, d_states):
        h0, w_zr, w_n, states, zr, n = ctx.saved_tensors
        previous, inside, d_zr, d_n = _backward_buffers(states, h0, ctx.clip)
        w_zr_t, w_n_t = w_zr.transpose(1, 2), w_n.transpose(1, 2)
        dh = torch.zeros_like(previous[0])
        for t in range(states.shape[0] - 1, -1, -1):
            dh = _gru_backward_step(
                d_states[t] + dh, previous[t], zr[t], n[t], inside[t], w_zr_t, w_n_t, d_zr[t], d_n[t]
            )
        return (torch.cat([d_zr, d_n], dim=-1), dh, *_recurrent_grads(previous, zr, d_zr, d_n), None)


class FusedDecoder(torch.autograd.Function):
    """The controller + generator loop of `decoder.eager_decode`, time-major (T, P, B, .) tensors.

    Inputs: gen_init, factor0 (the factor read from gen_init), con_h0, con_in_proj (ci part + bias),
    gen_in_proj (external-input part + bias), con_w_fac, con_zr, con_n, co_w, co_b, gen_w_co, gen_zr,
    gen_n, factor_w, con_mask, gen_mask, co_noise, clip. Without a controller the con_* / co_* inputs are
    None and gen_w_co has zero rows. Masks and noise are None when not training / not sampling.
    Outputs: gen_states, factors, con_states, co_means, co_stds, gen_inputs.
    """

    @staticmethod
    def forward(
        ctx,
        gen_init,
        factor0,
        con_h0,
        con_in_proj,
        gen_in_proj,
        con_w_fac,
        con_zr,
        con_n,
        co_w,
        co_b,
        gen_w_co,
        gen_zr,
        gen_n,
        factor_w,
        con_mask,
        gen_mask,
        co_noise,
        clip,
    ):
        steps = gen_in_proj.shape[0]
        use_con = con_in_proj is not None
        co_dim = gen_w_co.shape[1]
        gen = _Recurrence(gen_init, steps)
        factors = factor0.new_empty(steps, *factor0.shape)
        empty = gen_init.new_empty(steps, *gen_init.shape[:-1], 0)
        con_states = con_zr_gates = con_n_gates = co_params = co_stds = gen_inputs = empty
        if use_con:
            con = _Recurrence(con_h0, steps)
            con_states, con_zr_gates, con_n_gates = con.states, con.zr, con.n
            co_params = gen_init.new_empty(steps, *gen_init.shape[:-1], 2 * co_dim)
            co_stds, gen_inputs = (gen_init.new_empty(steps, *gen_init.shape[:-1], co_dim) for _ in range(2))
        gen_h, con_h, factor = gen_init, con_h0, factor0
        for t in range(steps):
            gen_x = gen_in_proj[t]
            if use_con:
                con_factor = factor if con_mask is None else factor * con_mask[t]
                con_h = con.step(t, torch.baddbmm(con_in_proj[t], con_factor, con_w_fac), con_h, con_zr, con_n, clip)
                co_mean, co_logvar = torch.baddbmm(co_b.unsqueeze(1), con_h, co_w, out=co_params[t]).split(
                    co_dim, dim=-1
                )
                co_std = torch.exp(0.5 * co_logvar, out=co_stds[t])
                co = (
                    torch.addcmul(co_mean, co_std, co_noise[t], out=gen_inputs[t])
                    if co_noise is not None
                    else gen_inputs[t].copy_(co_mean)
                )
                gen_x = torch.baddbmm(gen_x, co, gen_w_co)
            gen_h = gen.step(t, gen_x, gen_h, gen_zr, gen_n, clip)
            factor = torch.bmm(gen_h if gen_mask is None else gen_h * gen_mask[t], factor_w, out=factors[t])
        ctx.use_con, ctx.clip = use_con, clip
        ctx.save_for_backward(
            gen_init,
            factor0,
            con_h0,
            gen.states,
            gen.zr,
            gen.n,
            factors,
            con_states,
            con_zr_gates,
            con_n_gates,
            co_stds,
            gen_inputs,
            con_w_fac,
            con_zr,
            con_n,
            co_w,
            gen_w_co,
            gen_zr,
            gen_n,
            factor_w,
            con_mask,
            gen_mask,
            co_noise,
        )
        return gen.states, factors, con_states, co_params[..., :co_dim], co_stds, gen_inputs

    @staticmethod
    def backward(ctx, d_gen_states, d_factors, d_con_states, d_co_means, d_co_stds, d_gen_inputs):
        (
            gen_init,
            factor0,
            con_h0,
            gen_states,
            gen_zr_gates,
            gen_n_gates,
            factors,
            con_states,
            con_zr_gates,
            con_n_gates,
            co_stds,
            gen_inputs,
            con_w_fac,
            con_zr,
            con_n,
            co_w,
            gen_w_co,
            gen_zr,
            gen_n,
            factor_w,
            con_mask,
            gen_mask,
            co_noise,
        ) = ctx.saved_tensors
        clip = ctx.clip
        gen_previous, gen_inside, d_gen_zr_x, d_gen_n_x = _backward_buffers(gen_states, gen_init, clip)
        d_factor_all = torch.empty_like(factors)
        d_gen_h = torch.zeros_like(gen_init)
        d_factor_carry = torch.zeros_like(factor0)
        gen_zr_t, gen_n_t, factor_w_t = (w.transpose(1, 2) for w in (gen_zr, gen_n, factor_w))
        if ctx.use_con:
            con_previous, con_inside, d_con_zr_x, d_con_n_x = _backward_buffers(con_states, con_h0, clip)
            co_dim = gen_inputs.shape[-1]
            d_co_params = gen_init.new_empty(*gen_inputs.shape[:-1], 2 * co_dim)
            d_con_h = torch.zeros_like(con_previous[0])
            con_zr_t, con_n_t, co_w_t = (w.transpose(1, 2) for w in (con_zr, con_n, co_w))
            gen_w_co_zr_t, gen_w_co_n_t = (
                w.transpose(1, 2) for w in gen_w_co.split([2 * gen_init.shape[-1], gen_init.shape[-1]], dim=-1)
            )
            con_w_fac_zr_t, con_w_fac_n_t = (
                w.transpose(1, 2) for w in con_w_fac.split([2 * con_h0.shape[-1], con_h0.shape[-1]], dim=-1)
            )
        for t in range(gen_states.shape[0] - 1, -1, -1):
            d_factor = torch.add(d_factors[t], d_factor_carry, out=d_factor_all[t])
            d_gen_in = torch.bmm(d_factor, factor_w_t)
            d_gen = d_gen_states[t] + d_gen_h + (d_gen_in if gen_mask is None else d_gen_in * gen_mask[t])
            d_gen_h = _gru_backward_step(
                d_gen,
                gen_previous[t],
                gen_zr_gates[t],
                gen_n_gates[t],
                gen_inside[t],
                gen_zr_t,
                gen_n_t,
                d_gen_zr_x[t],
                d_gen_n_x[t],
            )
            if ctx.use_con:
                # d co = d x_gen @ W_gen_co^T, with d x_gen kept as its z|r and n parts
                d_co = torch.baddbmm(
                    torch.baddbmm(d_gen_inputs[t], d_gen_zr_x[t], gen_w_co_zr_t), d_gen_n_x[t], gen_w_co_n_t
                )
                d_std = d_co_stds[t] + (d_co * co_noise[t] if co_noise is not None else 0)
                d_mean, d_logvar = d_co_params[t].split(co_dim, dim=-1)
                torch.add(d_co, d_co_means[t], out=d_mean)
                torch.mul(d_std, 0.5 * co_stds[t], out=d_logvar)
                d_con = torch.baddbmm(d_con_states[t] + d_con_h, d_co_params[t], co_w_t)
                d_con_h = _gru_backward_step(
                    d_con,
                    con_previous[t],
                    con_zr_gates[t],
                    con_n_gates[t],
                    con_inside[t],
                    con_zr_t,
                    con_n_t,
                    d_con_zr_x[t],
                    d_con_n_x[t],
                )
                d_con_factor = torch.baddbmm(torch.bmm(d_con_zr_x[t], con_w_fac_zr_t), d_con_n_x[t], con_w_fac_n_t)
                d_factor_carry = d_con_factor if con_mask is None else d_con_factor * con_mask[t]

        gen_out = gen_states if gen_mask is None else gen_states * gen_mask
        d_gen_x = torch.cat([d_gen_zr_x, d_gen_n_x], dim=-1)
        d_gen_zr, d_gen_n = _recurrent_grads(gen_previous, gen_zr_gates, d_gen_zr_x, d_gen_n_x)
        grads = dict(
            gen_init=d_gen_h,
            factor0=d_factor_carry,
            gen_in_proj=d_gen_x,
            gen_zr=d_gen_zr,
            gen_n=d_gen_n,
            factor_w=_outer(gen_out, d_factor_all),
        )
        if ctx.use_con:
            con_factors = torch.cat([factor0.unsqueeze(0), factors[:-1]])
            if con_mask is not None:
                con_factors = con_factors * con_mask
            d_con_x = torch.cat([d_con_zr_x, d_con_n_x], dim=-1)
            d_con_zr, d_con_n = _recurrent_grads(con_previous, con_zr_gates, d_con_zr_x, d_con_n_x)
            grads.update(
                con_h0=d_con_h,
                con_in_proj=d_con_x,
                con_w_fac=_outer(con_factors, d_con_x),
                con_zr=d_con_zr,
                con_n=d_con_n,
                co_w=_outer(con_states, d_co_params),
                co_b=d_co_params.sum((0, 2)),
                gen_w_co=_outer(gen_inputs, d_gen_x),
            )
        else:
            grads["gen_w_co"] = torch.zeros_like(gen_w_co)
        order = (
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
        )
        return (*(grads.get(name) for name in order), None, None, None, None)
