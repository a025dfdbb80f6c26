"""The `manual` recurrent core: hand-written backward passes for the LFADS time loops (`cpp` runs the same loops
in C++; `cores.py` chooses).

Autograd records a dozen small nodes per time step for each of the four recurrent networks and computes
the weight gradients step by step. Here the forward loops run without recording and keep what the
backward needs (gates, clip masks); the backward loops walk time in reverse with plain tensor ops, and all
weight gradients are then one batched matmul over every step. The equations are those of `reference.py`;
tests check values and gradients against them.

Every step writes into preallocated sequence buffers: a network's trajectory h_0..h_T is one buffer (its
states and previous states are views of it, no concatenation), the input gradient dL/dx_proj is one buffer
written part by part (no concatenation of its z|r and n parts), and every per-step view is taken once with
unbind (indexing [t] in the loop costs a call per step and tensor). Sequences are group-major (G, T, B, .):
each group's steps are one block, so the weight-gradient matmuls over all steps read them without copies.
On a CPU the python-scalar forms of `1 - z` or `x * 2` cost twice a tensor-tensor op, hence the 0-dim constants.
"""

import functools
from typing import NamedTuple

import torch

from .cpp_loops import cpp_extension
from .decoder_inputs import FLAT_ORDER, ControllerSide, DecoderInputs, GeneratorSide

_HALF, _ONE, _TWO = torch.tensor(0.5), torch.tensor(1.0), torch.tensor(2.0)


class CppProjection(torch.autograd.Function):
    """bias (G, 1, N) + x (G, M, K) @ weight (G, K, N) with the C++ loops' kernel (1.3-1.9x MKL's at these sizes
    on one core)."""

    @staticmethod
    def forward(ctx, bias, x, weight):
        ctx.save_for_backward(x, weight)
        return cpp_extension().project(x, weight, bias)

    @staticmethod
    def backward(ctx, d_out):
        x, weight = ctx.saved_tensors
        d_x = cpp_extension().project(d_out, weight.transpose(1, 2), None) if ctx.needs_input_grad[1] else None
        return d_out.sum(1, keepdim=True), d_x, torch.bmm(x.transpose(1, 2), d_out)


def _tanh_(x: torch.Tensor) -> torch.Tensor:
    """tanh in place. On a CPU as 2 sigmoid(2x) - 1: torch's CPU tanh costs 4x that (within 2e-7 of tanh);
    on a GPU one kernel beats three."""
    if x.is_cuda:
        return x.tanh_()
    return x.mul_(_TWO).sigmoid_().mul_(_TWO).sub_(_ONE)


def _gru_forward_step(t, rnn, x_zr, x_n, h, w_zr, w_n, clip):
    """Step t of a clipped GRU, writing its gates z|r, n and the new state into rnn's buffers (no copies).

    h' = clamp(n + z * (h - n)) is computed in place in the state buffer, in the order of `reference.gru_step`
    (which differs only in its tanh: the values agree to about 1e-7)."""
    torch.baddbmm(x_zr, h, w_zr, out=rnn.zr[t]).sigmoid_()
    n = _tanh_(torch.baddbmm(x_n, rnn.r[t] * h, w_n, out=rnn.n[t]))
    return torch.sub(h, n, out=rnn.h[t + 1]).mul_(rnn.z[t]).add_(n).clamp_(-clip, clip)


class _steps(functools.cached_property):
    """A per-step view tuple of the (G, T, B, X) tensor attribute `name` (of its `part`-th of `of` equal
    parts along X, `parts` of them), made on first use."""

    def __init__(self, name: str, part: int = 0, of: int = 1, parts: int = 1):
        def steps(owner):
            whole = getattr(owner, name)
            if whole is None:  # a mask or noise that is not drawn
                return None
            width = whole.shape[-1] // of
            return whole[..., part * width : (part + parts) * width].unbind(1)

        super().__init__(steps)


class _Saved:
    """A recurrent network's forward record in the backward, and the clamp's pass mask; per-step views of
    h_{t-1}, z, r, n and the mask (unbind: one call, where indexing [t] would be one call per step). The mask
    and the views are made on first use: the C++ loops use none (they test |h| < clip as they go)."""

    def __init__(self, trajectory, zr, n, clip):
        self.trajectory, self.zr_all, self.n_all, self.clip = trajectory, zr, n, clip
        self.previous, self.states = trajectory[:, :-1], trajectory[:, 1:]
        self.r_all = zr[..., n.shape[-1] :]

    @functools.cached_property
    def inside_all(self) -> torch.Tensor:
        """|h| < clip  <=>  the update was inside the clamp (up to a tie at exactly +-clip, which has measure zero)."""
        return (self.states.abs() < self.clip).to(self.n_all.dtype)

    h = _steps("trajectory")
    n = _steps("n_all")
    inside = _steps("inside_all")
    z = _steps("zr_all", 0, 2)
    r = _steps("zr_all", 1, 2)


class _InputGrads:
    """dL/dx_proj (G, T, B, 3H), written step by step through per-step views of its z, r, n and z|r parts."""

    def __init__(self, like: torch.Tensor, hidden: int):
        self.all = like.new_empty(*like.shape[:-1], 3 * hidden)

    z = _steps("all", 0, 3)
    r = _steps("all", 1, 3)
    n = _steps("all", 2, 3)
    zr = _steps("all", 0, 3, parts=2)


def _gru_backward_step(t, g, saved, w_zr_t, w_n_t, d_x):
    """Given g = dL/dh_t, write dL/dx_proj_t into d_x's step t and return dL/dh_{t-1}."""
    z, r, n, h_prev = saved.z[t], saved.r[t], saved.n[t], saved.h[t]
    d_update = g * saved.inside[t]
    one_minus_z = torch.sub(_ONE, z)
    d_n = torch.mul(d_update * one_minus_z, torch.addcmul(_ONE, n, n, value=-1), out=d_x.n[t])
    d_rh = torch.bmm(d_n, w_n_t)
    torch.mul(d_update * (h_prev - n), z * one_minus_z, out=d_x.z[t])
    torch.mul(d_rh * h_prev, torch.addcmul(r, r, r, value=-1), out=d_x.r[t])
    return torch.baddbmm(d_update * z + d_rh * r, d_x.zr[t], w_zr_t)


def _outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum over time and batch of a_t^T b_t: a (G, T, B, i), b (G, T, B, o) -> (G, i, o), one matmul."""
    groups = a.shape[0]
    return torch.bmm(a.reshape(groups, -1, a.shape[-1]).transpose(1, 2), b.reshape(groups, -1, b.shape[-1]))


class _Recurrence:
    """What one recurrent network keeps from its forward loop, (G, T, B, .) each: its trajectory h_0..h_T
    (states = h_1..h_T, previous = h_0..h_{T-1}: views, no copies) and gates; per-step views of each."""

    def __init__(self, h0: torch.Tensor, steps: int):
        (groups, batch, hidden) = h0.shape
        self.trajectory = h0.new_empty(groups, steps + 1, batch, hidden)
        self.trajectory[:, 0].copy_(h0)
        self.states = self.trajectory[:, 1:]
        self.gates = h0.new_empty(groups, steps, batch, 2 * hidden)
        self.n_gates = h0.new_empty(groups, steps, batch, hidden)

    h = _steps("trajectory")
    zr = _steps("gates")
    n = _steps("n_gates")
    z = _steps("gates", 0, 2)
    r = _steps("gates", 1, 2)


def _input_steps(x_proj: torch.Tensor, hidden: int):
    """Per-step views of x_proj's z|r and n parts."""
    x_zr, x_n = x_proj.split([2 * hidden, hidden], dim=-1)
    return x_zr.unbind(1), x_n.unbind(1)


def _recurrent_grads(saved, d_x):
    """Gradients of W_hz|W_hr and W_hn from all steps at once."""
    hidden = saved.previous.shape[-1]
    return (
        _outer(saved.previous, d_x.all[..., : 2 * hidden]),
        _outer(saved.r_all * saved.previous, d_x.all[..., 2 * hidden :]),
    )


class ManualGRUSequence(torch.autograd.Function):
    """x_proj (G, T, B, 3H) = x W_ih + b, h0 (G, B, H), w_zr (G, H, 2H), w_n (G, H, H) -> states (G, T, B, H)."""

    @staticmethod
    def forward(ctx, x_proj, h0, w_zr, w_n, clip, cpp=False):
        rnn = _Recurrence(h0, x_proj.shape[1])
        if cpp:
            cpp_extension().gru_forward(x_proj, rnn.trajectory, rnn.gates, rnn.n_gates, w_zr, w_n, clip)
        else:
            x_zr, x_n = _input_steps(x_proj, h0.shape[-1])
            h = rnn.h[0]
            for t in range(x_proj.shape[1]):
                h = _gru_forward_step(t, rnn, x_zr[t], x_n[t], h, w_zr, w_n, clip)
        ctx.clip, ctx.cpp = clip, cpp
        ctx.save_for_backward(w_zr, w_n, rnn.trajectory, rnn.gates, rnn.n_gates)
        return rnn.states

    @staticmethod
    def backward(ctx, d_states):
        w_zr, w_n, trajectory, zr, n = ctx.saved_tensors
        saved = _Saved(trajectory, zr, n, ctx.clip)
        d_x = _InputGrads(n, n.shape[-1])
        if ctx.cpp:
            dh = cpp_extension().gru_backward(d_states, trajectory, zr, n, w_zr, w_n, d_x.all, ctx.clip)
        else:
            w_zr_t, w_n_t = w_zr.transpose(1, 2), w_n.transpose(1, 2)
            d_steps = d_states.unbind(1)
            last = n.shape[1] - 1
            dh = _gru_backward_step(last, d_steps[last], saved, w_zr_t, w_n_t, d_x)
            for t in range(last - 1, -1, -1):
                dh = _gru_backward_step(t, d_steps[t] + dh, saved, w_zr_t, w_n_t, d_x)
        return (d_x.all, dh, *_recurrent_grads(saved, d_x), None, None)


class _ControllerForward:
    """The controller's side of the decoder's forward loop: its weights, its recurrence, buffers for the
    controller-output parameters (means | log-variances), their stds and the generator inputs (P, T, B, .),
    and per-step views of all (made on first use)."""

    def __init__(self, con: ControllerSide, gen_w_co: torch.Tensor, like: torch.Tensor):
        (members, steps), batch, co_dim = con.con_in_proj.shape[:2], like.shape[1], gen_w_co.shape[1]
        self.rnn = _Recurrence(con.con_h0, steps)
        self.in_proj, self.mask, self.noise_all = con.con_in_proj, con.con_mask, con.co_noise
        self.params = like.new_empty(members, steps, batch, 2 * co_dim)
        self.stds, self.gen_inputs = (like.new_empty(members, steps, batch, co_dim) for _ in range(2))
        self.hidden = con.con_h0.shape[-1]
        self.w_fac, self.w_zr, self.w_n, self.co_w = con.con_w_fac, con.con_zr, con.con_n, con.co_w
        self.gen_w_co, self.co_b = gen_w_co, con.co_b.unsqueeze(1)

    x = _steps("in_proj")
    param_steps = _steps("params")
    means = _steps("params", 0, 2)
    logvars = _steps("params", 1, 2)
    std_steps = _steps("stds")
    gen_input_steps = _steps("gen_inputs")
    masks = _steps("mask")
    noise = _steps("noise_all")


def _controller_forward_step(t, con, factor, con_h, gen_x, gen_hidden, clip):
    """Step t of the controller, from the previous factor: its new state and output (written into con's
    buffers) -> the new state and the generator's input projections z|r and n with that output added."""
    con_factor = factor if con.masks is None else factor * con.masks[t]
    con_zr_x, con_n_x = torch.baddbmm(con.x[t], con_factor, con.w_fac).split([2 * con.hidden, con.hidden], dim=-1)
    con_h = _gru_forward_step(t, con.rnn, con_zr_x, con_n_x, con_h, con.w_zr, con.w_n, clip)
    torch.baddbmm(con.co_b, con_h, con.co_w, out=con.param_steps[t])
    co_std = torch.exp(torch.mul(con.logvars[t], _HALF), out=con.std_steps[t])
    co = (
        torch.addcmul(con.means[t], co_std, con.noise[t], out=con.gen_input_steps[t])
        if con.noise is not None
        else con.gen_input_steps[t].copy_(con.means[t])
    )
    gen_zr_x, gen_n_x = torch.baddbmm(gen_x, co, con.gen_w_co).split([2 * gen_hidden, gen_hidden], dim=-1)
    return con_h, gen_zr_x, gen_n_x


def _decoder_forward_loop(gen, con, factor_steps, side: GeneratorSide, clip):
    """The forward time loop: the controller step (with a controller), the generator step, then the factor
    read from the new generator state (its dropped-out copy) into factor_steps[t + 1]."""
    gen_in_proj, gen_zr, gen_n, factor_w, gen_mask = (
        side.gen_in_proj,
        side.gen_zr,
        side.gen_n,
        side.factor_w,
        side.gen_mask,
    )
    gen_hidden = gen.h[0].shape[-1]
    gen_x_zr, gen_x_n = _input_steps(gen_in_proj, gen_hidden)
    gen_x = gen_in_proj.unbind(1)
    gen_masks = gen_mask.unbind(1) if gen_mask is not None else None
    gen_h = gen.h[0]
    con_h = con.rnn.h[0] if con is not None else None
    for t in range(gen_in_proj.shape[1]):
        if con is not None:
            con_h, gen_zr_x, gen_n_x = _controller_forward_step(
                t, con, factor_steps[t], con_h, gen_x[t], gen_hidden, clip
            )
        else:
            gen_zr_x, gen_n_x = gen_x_zr[t], gen_x_n[t]
        gen_h = _gru_forward_step(t, gen, gen_zr_x, gen_n_x, gen_h, gen_zr, gen_n, clip)
        torch.bmm(gen_h if gen_masks is None else gen_h * gen_masks[t], factor_w, out=factor_steps[t + 1])


class _DecoderRecord(NamedTuple):
    """What ManualDecoder's forward saves for its backward, in `ctx.save_for_backward` order: the forward
    record (zero-width tensors for the con_* / co_* / gen_inputs entries without a controller), then inputs."""

    gen_trajectory: torch.Tensor
    gen_zr_gates: torch.Tensor
    gen_n_gates: torch.Tensor
    factor_trajectory: torch.Tensor
    con_trajectory: torch.Tensor
    con_zr_gates: torch.Tensor
    con_n_gates: torch.Tensor
    co_stds: torch.Tensor
    gen_inputs: torch.Tensor
    con_w_fac: torch.Tensor | None
    con_zr: torch.Tensor | None
    con_n: torch.Tensor | None
    co_w: torch.Tensor | None
    gen_w_co: torch.Tensor
    gen_zr: torch.Tensor
    gen_n: torch.Tensor
    factor_w: torch.Tensor
    con_mask: torch.Tensor | None
    gen_mask: torch.Tensor | None
    co_noise: torch.Tensor | None


class _ControllerBackward:
    """The controller's side of the decoder's backward loop: its forward record, its input gradient
    dL/dx_proj, dL/d(means | log-variances) (P, T, B, 2 co_dim) written step by step, the incoming output
    gradients, the transposed weights, and per-step views (made on first use); d_h carries dL/dcon_h between
    steps."""

    def __init__(self, s: _DecoderRecord, clip, d_gen_inputs, d_co_means, d_co_stds, d_con_states):
        self.saved = _Saved(s.con_trajectory, s.con_zr_gates, s.con_n_gates, clip)
        self.d_x = _InputGrads(s.con_n_gates, s.con_n_gates.shape[-1])
        self.d_x_all = self.d_x.all
        co_dim = s.gen_inputs.shape[-1]
        self.d_params = s.gen_inputs.new_empty(*s.gen_inputs.shape[:-1], 2 * co_dim)
        self.d_outputs = (d_gen_inputs, d_co_means, d_co_stds, d_con_states)
        self.d_gen_inputs_all, self.d_co_means_all, self.d_co_stds_all, self.d_states_all = self.d_outputs
        self.co_stds, self.noise_all, self.mask = s.co_stds, s.co_noise, s.con_mask
        self.d_h = None
        self.zr_t, self.n_t, self.co_w_t, self.gen_w_co_t, self.w_fac_t = (
            w.transpose(1, 2) for w in (s.con_zr, s.con_n, s.co_w, s.gen_w_co, s.con_w_fac)
        )

    d_x_steps = _steps("d_x_all")
    d_param_steps = _steps("d_params")
    d_means = _steps("d_params", 0, 2)
    d_logvars = _steps("d_params", 1, 2)
    d_gen_inputs = _steps("d_gen_inputs_all")
    d_co_means = _steps("d_co_means_all")
    d_co_stds = _steps("d_co_stds_all")
    d_states = _steps("d_states_all")
    noise = _steps("noise_all")
    masks = _steps("mask")

    @functools.cached_property
    def half_stds(self):
        return (0.5 * self.co_stds).unbind(1)


def _controller_backward_step(t, con, d_gen_x):
    """Step t of the controller in reverse, from dL/dx_gen_t (writing into con's buffers) -> dL/dfactor_{t-1}
    through the controller."""
    d_co = torch.baddbmm(con.d_gen_inputs[t], d_gen_x, con.gen_w_co_t)  # d co = d x_gen @ W_gen_co^T
    torch.add(d_co, con.d_co_means[t], out=con.d_means[t])
    d_std = con.d_co_stds[t] if con.noise is None else torch.addcmul(con.d_co_stds[t], d_co, con.noise[t])
    torch.mul(d_std, con.half_stds[t], out=con.d_logvars[t])
    d_con = torch.baddbmm(con.d_states[t], con.d_param_steps[t], con.co_w_t)
    if con.d_h is not None:
        d_con += con.d_h
    con.d_h = _gru_backward_step(t, d_con, con.saved, con.zr_t, con.n_t, con.d_x)
    d_con_factor = torch.bmm(con.d_x_steps[t], con.w_fac_t)
    return d_con_factor if con.masks is None else d_con_factor.mul_(con.masks[t])


def _decoder_backward_loop(s: _DecoderRecord, gen, d_gen_x, con, d_factor_all, d_factors, d_gen_states):
    """The backward time loop, last step first: dL/dfactor_t (written into d_factor_all), the generator step,
    then the controller step (with a controller) -> dL/dgen_init and dL/dfactor0 (None without a controller)."""
    d_factor_steps, d_factors, d_gen_states = d_factor_all.unbind(1), d_factors.unbind(1), d_gen_states.unbind(1)
    d_gen_x_steps = d_gen_x.all.unbind(1)
    gen_masks = s.gen_mask.unbind(1) if s.gen_mask is not None else None
    d_gen_h = d_factor_carry = None
    gen_zr_t, gen_n_t, factor_w_t = (w.transpose(1, 2) for w in (s.gen_zr, s.gen_n, s.factor_w))
    for t in range(len(d_gen_states) - 1, -1, -1):
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
        if con is not None:
            d_factor_carry = _controller_backward_step(t, con, d_gen_x_steps[t])
    return d_gen_h, d_factor_carry


def _cpp_side(record: tuple[torch.Tensor, ...], **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
    """One side of the decoder loop (generator or controller) as the C++ loops read it (`Named` in
    csrc/loops.cpp): the network's record (trajectory h_0..h_T, z|r gates, n gates) and the rest, by name."""
    trajectory, zr_gates, n_gates = record
    return dict(trajectory=trajectory, zr_gates=zr_gates, n_gates=n_gates, **tensors)


def _cpp_decoder_forward(gen, con, factor_trajectory, side: GeneratorSide, clip):
    """`_decoder_forward_loop` in C++ (`cpp_loops.cpp_extension`), on the same buffers."""
    gen_side = _cpp_side(
        (gen.trajectory, gen.gates, gen.n_gates), in_proj=side.gen_in_proj, zr=side.gen_zr, n=side.gen_n,
        factor_w=side.factor_w,
    )  # fmt: skip
    con_side = None
    if con is not None:
        con_side = _cpp_side(
            (con.rnn.trajectory, con.rnn.gates, con.rnn.n_gates), in_proj=con.in_proj, w_fac=con.w_fac, zr=con.w_zr,
            n=con.w_n, co_w=con.co_w, co_b=con.co_b.squeeze(1), gen_w_co=con.gen_w_co, params=con.params,
            stds=con.stds, gen_inputs=con.gen_inputs,
        )  # fmt: skip
    con_mask, co_noise = (None, None) if con is None else (con.mask, con.noise_all)
    cpp_extension().decoder_forward(gen_side, factor_trajectory, side.gen_mask, con_side, con_mask, co_noise, clip)


def _cpp_decoder_backward(s: _DecoderRecord, gen, d_gen_x, con, d_factor_all, d_factors, d_gen_states):
    """`_decoder_backward_loop` in C++ (`cpp_loops.cpp_extension`), on the same buffers."""
    gen_side = _cpp_side(
        (s.gen_trajectory, s.gen_zr_gates, s.gen_n_gates), d_x=d_gen_x.all, zr=s.gen_zr, n=s.gen_n, factor_w=s.factor_w
    )
    con_side = None
    if con is not None:
        d_gen_inputs, d_co_means, d_co_stds, d_states = con.d_outputs
        con_side = _cpp_side(
            (s.con_trajectory, s.con_zr_gates, s.con_n_gates), d_x=con.d_x.all, d_params=con.d_params,
            d_gen_inputs=d_gen_inputs, d_co_means=d_co_means, d_co_stds=d_co_stds, d_states=d_states,
            stds=s.co_stds, zr=s.con_zr, n=s.con_n, co_w=s.co_w, gen_w_co=s.gen_w_co, w_fac=s.con_w_fac,
        )  # fmt: skip
    grads = cpp_extension().decoder_backward(
        gen_side, d_factor_all, d_factors, d_gen_states, s.gen_mask, con_side, s.co_noise, s.con_mask, gen.clip
    )
    if con is None:
        return grads[0], None
    con.d_h = grads[2]
    return grads[0], grads[1]


def _generator_grads(s: _DecoderRecord, gen, d_gen_x, d_factor_all, d_gen_h, d_factor0):
    """Gradients of the generator's inputs and weights, the weight gradients as one matmul over all steps;
    dL/dfactor0 is zero without a controller (only the controller reads factor0)."""
    gen_out = gen.states if s.gen_mask is None else gen.states * s.gen_mask
    d_gen_zr, d_gen_n = _recurrent_grads(gen, d_gen_x)
    return dict(
        gen_init=d_gen_h,
        factor0=d_factor0 if d_factor0 is not None else torch.zeros_like(s.factor_trajectory[:, 0]),
        gen_in_proj=d_gen_x.all,
        gen_zr=d_gen_zr,
        gen_n=d_gen_n,
        factor_w=_outer(gen_out, d_factor_all),
    )


def _controller_grads(s: _DecoderRecord, con, d_gen_x):
    """Gradients of the controller's inputs and weights and of gen_w_co, each weight one matmul over all steps."""
    con_factors = s.factor_trajectory[:, :-1] if s.con_mask is None else s.factor_trajectory[:, :-1] * s.con_mask
    d_con_zr, d_con_n = _recurrent_grads(con.saved, con.d_x)
    return dict(
        con_h0=con.d_h,
        con_in_proj=con.d_x.all,
        con_w_fac=_outer(con_factors, con.d_x.all),
        con_zr=d_con_zr,
        con_n=d_con_n,
        co_w=_outer(con.saved.states, con.d_params),
        co_b=con.d_params.sum((1, 2)),
        gen_w_co=_outer(s.gen_inputs, d_gen_x.all),
    )


class ManualDecoder(torch.autograd.Function):
    """The controller + generator loop of `reference.decode`, member-major (P, T, B, .) sequences.

    Arguments: `DecoderInputs.flat()` (its tensors in FLAT_ORDER, then clip), then `cpp` (the loops in C++).
    Outputs: gen_states, factors, con_states, co_means, co_stds, gen_inputs.
    """

    @staticmethod
    def forward(ctx, *args):
        *flat, cpp = args
        inputs = DecoderInputs.from_flat(tuple(flat))
        side, clip = inputs.gen, inputs.clip
        (members, steps, batch), co_dim = side.gen_in_proj.shape[:3], side.gen_w_co.shape[1]
        gen = _Recurrence(side.gen_init, steps)
        # factor_{-1..T-1}: factor0 then each step's factor (the controller reads the previous one)
        factor_trajectory = side.factor0.new_empty(members, steps + 1, batch, side.factor0.shape[-1])
        factor_trajectory[:, 0].copy_(side.factor0)
        con = None if inputs.con is None else _ControllerForward(inputs.con, side.gen_w_co, side.gen_init)
        if cpp:
            _cpp_decoder_forward(gen, con, factor_trajectory, side, clip)
        else:
            _decoder_forward_loop(gen, con, factor_trajectory.unbind(1), side, clip)
        if con is None:
            empty = side.gen_init.new_empty(members, steps, batch, 0)
            con_record, con_states, co_params = (empty,) * 5, empty, empty
            con_weights, con_masks = (None,) * 4, (None, None)
        else:
            con_record = (con.rnn.trajectory, con.rnn.gates, con.rnn.n_gates, con.stds, con.gen_inputs)
            con_states, co_params = con.rnn.states, con.params
            c = inputs.con
            con_weights, con_masks = (c.con_w_fac, c.con_zr, c.con_n, c.co_w), (c.con_mask, c.co_noise)
        ctx.use_con, ctx.clip, ctx.cpp = con is not None, clip, cpp
        gen_weights = (side.gen_w_co, side.gen_zr, side.gen_n, side.factor_w)
        saved = (*con_weights, *gen_weights, con_masks[0], side.gen_mask, con_masks[1])
        ctx.save_for_backward(gen.trajectory, gen.gates, gen.n_gates, factor_trajectory, *con_record, *saved)
        co_stds, gen_inputs = con_record[3:]
        return gen.states, factor_trajectory[:, 1:], con_states, co_params[..., :co_dim], co_stds, gen_inputs

    @staticmethod
    def backward(ctx, d_gen_states, d_factors, d_con_states, d_co_means, d_co_stds, d_gen_inputs):
        s = _DecoderRecord(*ctx.saved_tensors)
        gen = _Saved(s.gen_trajectory, s.gen_zr_gates, s.gen_n_gates, ctx.clip)
        d_gen_x = _InputGrads(s.gen_n_gates, s.gen_n_gates.shape[-1])
        d_factor_all = torch.empty_like(s.factor_trajectory[:, 1:])
        con = None
        if ctx.use_con:
            con = _ControllerBackward(s, ctx.clip, d_gen_inputs, d_co_means, d_co_stds, d_con_states)
        backward_loop = _cpp_decoder_backward if ctx.cpp else _decoder_backward_loop
        d_gen_h, d_factor0 = backward_loop(s, gen, d_gen_x, con, d_factor_all, d_factors, d_gen_states)
        grads = _generator_grads(s, gen, d_gen_x, d_factor_all, d_gen_h, d_factor0)
        if con is None:
            grads["gen_w_co"] = torch.zeros_like(s.gen_w_co)
        else:
            grads.update(_controller_grads(s, con, d_gen_x))
        return (*(grads.get(name) for name in FLAT_ORDER), None, None)  # no gradient of clip and cpp
