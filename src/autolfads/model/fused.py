"""The fast recurrent core: hand-written backward passes for the LFADS time loops.

Autograd records a dozen small nodes per time step for each of the four recurrent networks and computes
the weight gradients step by step. Here the forward loops run without recording and keep what the
backward needs (gates, clip masks); the backward loops walk time in reverse with plain tensor ops, and all
weight gradients are then one batched matmul over every step. The equations are those of
`recurrent.gru_step` and of the eager decoder loop; tests check values and gradients against them.

Every step writes into preallocated sequence buffers: a network's trajectory h_0..h_T is one buffer (its
states and previous states are views of it, no concatenation), the input gradient dL/dx_proj is one buffer
written part by part (no concatenation of its z|r and n parts), and every per-step view is taken once with
unbind (indexing [t] in the loop costs a call per step and tensor).
"""

import torch


def _gru_forward_step(t, rnn, x_zr, x_n, h, w_zr, w_n, clip):
    """Step t of a clipped GRU, writing its gates z|r, n and the new state into rnn's buffers (no copies).

    h' = clamp(n + z * (h - n)) is computed in place in the state buffer: the same operations in the same
    order as `recurrent.gru_step`, so the same values to the last bit."""
    torch.baddbmm(x_zr, h, w_zr, out=rnn.zr[t]).sigmoid_()
    n = torch.baddbmm(x_n, rnn.r[t] * h, w_n, out=rnn.n[t]).tanh_()
    return torch.sub(h, n, out=rnn.h[t + 1]).mul_(rnn.z[t]).add_(n).clamp_(-clip, clip)


class _Saved:
    """A recurrent network's forward record in the backward: per-step views (unbind: one call, where indexing
    [t] would be one call per step) of h_{t-1}, z, r, n and the clamp's pass mask."""

    def __init__(self, trajectory, zr, n, clip):
        self.previous, self.states = trajectory[:-1], trajectory[1:]
        hidden = n.shape[-1]
        self.r_all = zr[..., hidden:]
        # |h| < clip  <=>  the update was inside the clamp (up to a tie at exactly +-clip, which has measure zero)
        inside = (self.states.abs() < clip).to(n.dtype)
        self.h, self.n, self.inside = trajectory.unbind(0), n.unbind(0), inside.unbind(0)
        self.z, self.r = (x.unbind(0) for x in zr.chunk(2, dim=-1))


class _InputGrads:
    """dL/dx_proj (T, G, B, 3H), written step by step through per-step views of its z, r, n and z|r parts."""

    def __init__(self, like: torch.Tensor, hidden: int):
        self.all = like.new_empty(*like.shape[:-1], 3 * hidden)
        self.z, self.r, self.n = (x.unbind(0) for x in self.all.split(hidden, dim=-1))
        self.zr = self.all[..., : 2 * hidden].unbind(0)


def _gru_backward_step(t, g, saved, w_zr_t, w_n_t, d_x):
    """Given g = dL/dh_t, write dL/dx_proj_t into d_x's step t and return dL/dh_{t-1}."""
    z, r, n, h_prev = saved.z[t], saved.r[t], saved.n[t], saved.h[t]
    d_update = g * saved.inside[t]
    one_minus_z = 1 - z
    d_n = torch.mul(d_update * one_minus_z, 1 - n * n, out=d_x.n[t])
    d_rh = torch.bmm(d_n, w_n_t)
    torch.mul(d_update * (h_prev - n), z * one_minus_z, out=d_x.z[t])
    torch.mul(d_rh * h_prev, r * (1 - r), out=d_x.r[t])
    return torch.baddbmm(d_update * z + d_rh * r, d_x.zr[t], w_zr_t)


def _outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum over time and batch of a_t^T b_t: a (T, G, B, i), b (T, G, B, o) -> (G, i, o), one matmul."""
    steps, groups, batch = a.shape[:3]
    return torch.bmm(
        a.transpose(0, 1).reshape(groups, steps * batch, -1).transpose(1, 2),
        b.transpose(0, 1).reshape(groups, steps * batch, -1),
    )


class _Recurrence:
    """What one recurrent network keeps from its forward loop, (T, G, B, .) each: its trajectory h_0..h_T
    (states = h_1..h_T, previous = h_0..h_{T-1}: views, no copies) and gates; per-step views of each."""

    def __init__(self, h0: torch.Tensor, steps: int):
        hidden = h0.shape[-1]
        shape = (steps, *h0.shape[:-1])
        self.trajectory = h0.new_empty(steps + 1, *h0.shape)
        self.trajectory[0].copy_(h0)
        self.states = self.trajectory[1:]
        self.gates = h0.new_empty(*shape, 2 * hidden)
        self.n_gates = h0.new_empty(*shape, hidden)
        self.h, self.zr, self.n = self.trajectory.unbind(0), self.gates.unbind(0), self.n_gates.unbind(0)
        self.z, self.r = (x.unbind(0) for x in self.gates.chunk(2, dim=-1))


def _input_steps(x_proj: torch.Tensor, hidden: int):
    """Per-step views of x_proj's z|r and n parts."""
    x_zr, x_n = x_proj.split([2 * hidden, hidden], dim=-1)
    return x_zr.unbind(0), x_n.unbind(0)


def _recurrent_grads(saved, d_x):
    """Gradients of W_hz|W_hr and W_hn from all steps at once."""
    hidden = saved.previous.shape[-1]
    return (
        _outer(saved.previous, d_x.all[..., : 2 * hidden]),
        _outer(saved.r_all * saved.previous, d_x.all[..., 2 * hidden :]),
    )


class FusedGRUSequence(torch.autograd.Function):
    """x_proj (T, G, B, 3H) = x W_ih + b, h0 (G, B, H), w_zr (G, H, 2H), w_n (G, H, H) -> states (T, G, B, H)."""

    @staticmethod
    def forward(ctx, x_proj, h0, w_zr, w_n, clip):
        rnn = _Recurrence(h0, x_proj.shape[0])
        x_zr, x_n = _input_steps(x_proj, h0.shape[-1])
        h = rnn.h[0]
        for t in range(x_proj.shape[0]):
            h = _gru_forward_step(t, rnn, x_zr[t], x_n[t], h, w_zr, w_n, clip)
        ctx.clip = clip
        ctx.save_for_backward(w_zr, w_n, rnn.trajectory, rnn.gates, rnn.n_gates)
        return rnn.states

    @staticmethod
    def backward(ctx, d_states):
        w_zr, w_n, trajectory, zr, n = ctx.saved_tensors
        saved = _Saved(trajectory, zr, n, ctx.clip)
        d_x = _InputGrads(n, n.shape[-1])
        w_zr_t, w_n_t = w_zr.transpose(1, 2), w_n.transpose(1, 2)
        d_steps = d_states.unbind(0)
        last = n.shape[0] - 1
        dh = _gru_backward_step(last, d_steps[last], saved, w_zr_t, w_n_t, d_x)
        for t in range(last - 1, -1, -1):
            dh = _gru_backward_step(t, d_steps[t] + dh, saved, w_zr_t, w_n_t, d_x)
        return (d_x.all, dh, *_recurrent_grads(saved, d_x), None)


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
        gen_x_zr, gen_x_n = _input_steps(gen_in_proj, gen_init.shape[-1])
        gen_x = gen_in_proj.unbind(0)
        # factor_{-1..T-1}: factor0 then each step's factor (the controller reads the previous one)
        factor_trajectory = factor0.new_empty(steps + 1, *factor0.shape)
        factor_trajectory[0].copy_(factor0)
        factor_steps = factor_trajectory.unbind(0)
        gen_masks = gen_mask.unbind(0) if gen_mask is not None else None
        empty = gen_init.new_empty(steps, *gen_init.shape[:-1], 0)
        con_trajectory = con_zr_gates = con_n_gates = co_params = co_stds = gen_inputs = empty
        if use_con:
            con = _Recurrence(con_h0, steps)
            con_trajectory, con_zr_gates, con_n_gates = con.trajectory, con.gates, con.n_gates
            con_x = con_in_proj.unbind(0)
            co_params = gen_init.new_empty(steps, *gen_init.shape[:-1], 2 * co_dim)
            co_stds, gen_inputs = (gen_init.new_empty(steps, *gen_init.shape[:-1], co_dim) for _ in range(2))
            co_means, co_logvars = (x.unbind(0) for x in co_params.split(co_dim, dim=-1))
            co_param_steps, co_std_steps, gen_input_steps = (x.unbind(0) for x in (co_params, co_stds, gen_inputs))
            con_masks = con_mask.unbind(0) if con_mask is not None else None
            noise = co_noise.unbind(0) if co_noise is not None else None
            con_hidden = con_h0.shape[-1]
            co_b = co_b.unsqueeze(1)
            con_h = con.h[0]
        gen_h = gen.h[0]
        for t in range(steps):
            gen_zr_x = gen_x_zr[t]
            if use_con:
                factor = factor_steps[t]
                con_factor = factor if con_masks is None else factor * con_masks[t]
                con_zr_x, con_n_x = torch.baddbmm(con_x[t], con_factor, con_w_fac).split(
                    [2 * con_hidden, con_hidden], dim=-1
                )
                con_h = _gru_forward_step(t, con, con_zr_x, con_n_x, con_h, con_zr, con_n, clip)
                torch.baddbmm(co_b, con_h, co_w, out=co_param_steps[t])
                co_std = torch.exp(0.5 * co_logvars[t], out=co_std_steps[t])
                co = (
                    torch.addcmul(co_means[t], co_std, noise[t], out=gen_input_steps[t])
                    if noise is not None
                    else gen_input_steps[t].copy_(co_means[t])
                )
                gen_zr_x, gen_n_x = torch.baddbmm(gen_x[t], co, gen_w_co).split(
                    [2 * gen_init.shape[-1], gen_init.shape[-1]], dim=-1
                )
            else:
                gen_n_x = gen_x_n[t]
            gen_h = _gru_forward_step(t, gen, gen_zr_x, gen_n_x, gen_h, gen_zr, gen_n, clip)
            torch.bmm(gen_h if gen_masks is None else gen_h * gen_masks[t], factor_w, out=factor_steps[t + 1])
        ctx.use_con, ctx.clip = use_con, clip
        ctx.save_for_backward(
            gen.trajectory,
            gen.gates,
            gen.n_gates,
            factor_trajectory,
            con_trajectory,
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
        con_states = con_trajectory[1:] if use_con else empty
        return gen.states, factor_trajectory[1:], con_states, co_params[..., :co_dim], co_stds, gen_inputs

    @staticmethod
    def backward(ctx, d_gen_states, d_factors, d_con_states, d_co_means, d_co_stds, d_gen_inputs):
        (
            gen_trajectory,
            gen_zr_gates,
            gen_n_gates,
            factor_trajectory,
            con_trajectory,
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
        clip, use_con = ctx.clip, ctx.use_con
        gen = _Saved(gen_trajectory, gen_zr_gates, gen_n_gates, clip)
        gen_states = gen.states
        d_gen_x = _InputGrads(gen_n_gates, gen_n_gates.shape[-1])
        d_gen_x_steps = d_gen_x.all.unbind(0)
        d_factor_all = torch.empty_like(factor_trajectory[1:])
        d_factor_steps, d_factors, d_gen_states = d_factor_all.unbind(0), d_factors.unbind(0), d_gen_states.unbind(0)
        gen_masks = gen_mask.unbind(0) if gen_mask is not None else None
        d_gen_h = d_factor_carry = None
        gen_zr_t, gen_n_t, factor_w_t = (w.transpose(1, 2) for w in (gen_zr, gen_n, factor_w))
        if use_con:
            con = _Saved(con_trajectory, con_zr_gates, con_n_gates, clip)
            con_states = con.states
            d_con_x = _InputGrads(con_n_gates, con_n_gates.shape[-1])
            d_con_x_steps = d_con_x.all.unbind(0)
            co_dim = gen_inputs.shape[-1]
            d_co_params = gen_inputs.new_empty(*gen_inputs.shape[:-1], 2 * co_dim)
            d_co_param_steps = d_co_params.unbind(0)
            d_means, d_logvars = (x.unbind(0) for x in d_co_params.split(co_dim, dim=-1))
            d_gen_inputs, d_co_means, d_co_stds, d_con_states = (
                x.unbind(0) for x in (d_gen_inputs, d_co_means, d_co_stds, d_con_states)
            )
            half_stds = (0.5 * co_stds).unbind(0)
            noise = co_noise.unbind(0) if co_noise is not None else None
            con_masks = con_mask.unbind(0) if con_mask is not None else None
            d_con_h = None
            con_zr_t, con_n_t, co_w_t, gen_w_co_t, con_w_fac_t = (
                w.transpose(1, 2) for w in (con_zr, con_n, co_w, gen_w_co, con_w_fac)
            )
        for t in range(gen_states.shape[0] - 1, -1, -1):
            d_factor = (
                d_factor_steps[t].copy_(d_factors[t])
                if d_factor_carry is None
                else torch.add(d_factors[t], d_factor_carry, out=d_factor_steps[t])
            )
            d_gen_in = torch.bmm(d_factor, factor_w_t)
            d_gen = d_gen_states[t] + (d_gen_in if gen_masks is None else d_gen_in.mul_(gen_masks[t]))
            if d_gen_h is not None:
                d_gen += d_gen_h
            d_gen_h = _gru_backward_step(t, d_gen, gen, gen_zr_t, gen_n_t, d_gen_x)
            if use_con:
                d_co = torch.baddbmm(d_gen_inputs[t], d_gen_x_steps[t], gen_w_co_t)  # d co = d x_gen @ W_gen_co^T
                torch.add(d_co, d_co_means[t], out=d_means[t])
                d_std = d_co_stds[t] if noise is None else torch.addcmul(d_co_stds[t], d_co, noise[t])
                torch.mul(d_std, half_stds[t], out=d_logvars[t])
                d_con = torch.baddbmm(d_con_states[t], d_co_param_steps[t], co_w_t)
                if d_con_h is not None:
                    d_con += d_con_h
                d_con_h = _gru_backward_step(t, d_con, con, con_zr_t, con_n_t, d_con_x)
                d_con_factor = torch.bmm(d_con_x_steps[t], con_w_fac_t)
                d_factor_carry = d_con_factor if con_masks is None else d_con_factor.mul_(con_masks[t])

        gen_out = gen_states if gen_mask is None else gen_states * gen_mask
        d_gen_zr, d_gen_n = _recurrent_grads(gen, d_gen_x)
        grads = dict(
            gen_init=d_gen_h,
            factor0=d_factor_carry if use_con else torch.zeros_like(factor_trajectory[0]),
            gen_in_proj=d_gen_x.all,
            gen_zr=d_gen_zr,
            gen_n=d_gen_n,
            factor_w=_outer(gen_out, d_factor_all),
        )
        if use_con:
            con_factors = factor_trajectory[:-1] if con_mask is None else factor_trajectory[:-1] * con_mask
            d_con_zr, d_con_n = _recurrent_grads(con, d_con_x)
            grads.update(
                con_h0=d_con_h,
                con_in_proj=d_con_x.all,
                con_w_fac=_outer(con_factors, d_con_x.all),
                con_zr=d_con_zr,
                con_n=d_con_n,
                co_w=_outer(con_states, d_co_params),
                co_b=d_co_params.sum((0, 2)),
                gen_w_co=_outer(gen_inputs, d_gen_x.all),
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
