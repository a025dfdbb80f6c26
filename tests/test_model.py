"""The LFADS model and its training maths, checked against hand-written references of the spec
(/work/shared/reference/lfads-model-spec.md): recurrent cell, population independence, encoder, decoder,
priors, reconstructions, augmentations, objective, optimizer and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import gammaln

from autolfads.model import LFADS, MemberRNG
from autolfads.model.augmentations import block_gradients, coordinated_dropout, pad_to, sample_validation_mask
from autolfads.model.encoder import Encoder
from autolfads.model.population import PopulationLinear, member_dropout
from autolfads.model.priors import AutoregressivePrior, GaussianPrior
from autolfads.model.reconstruction import RECONSTRUCTIONS, Gaussian, Poisson
from autolfads.model.recurrent import BidirectionalGRU, ClippedGRUCell, gru_sequence, gru_step
from autolfads.train.metrics import R2Accumulator, bits_per_spike, null_nll_sum, poisson_nll, r2_score, smooth
from autolfads.train.objective import ramp, reconstruction_loss, total_loss
from autolfads.train.optim import PopulationAdam, clip_member_grad_norms
from helpers import ar_kl_by_hand, member, model_config, numpy_gru_sequence, numpy_gru_step, sigmoid


def randomize_(module: torch.nn.Module, seed: int, scale: float = 0.5) -> None:
    """Overwrite every parameter with random values (biases included), so no test relies on init values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * scale)


# ==================================================================================== 1. recurrent cell


def test_gru_step_matches_spec_equations():
    P, B, n_in, H, clip = 2, 4, 3, 5, 100.0
    cell = ClippedGRUCell(MemberRNG([1, 2]), n_in, H, clip, encoder_init=True)
    randomize_(cell, 0, scale=0.8)
    x = torch.randn(P, B, n_in, generator=torch.Generator().manual_seed(1))
    h = torch.randn(P, B, H, generator=torch.Generator().manual_seed(2)) * 0.7
    w_zr, w_n = cell.split_recurrent()
    got = gru_step(torch.baddbmm(cell.bias.unsqueeze(1), x, cell.weight_ih), h, w_zr, w_n, clip)
    for p in range(P):
        want = numpy_gru_step(
            member(x, p), member(h, p), member(cell.weight_ih, p), member(cell.weight_hh, p), member(cell.bias, p), clip
        )
        np.testing.assert_allclose(got[p].detach().numpy(), want, atol=1e-5)

    # The reference is discriminating: the cuDNN (reset-after) form gives a clearly different state.
    xp = member(x, 0) @ member(cell.weight_ih, 0) + member(cell.bias, 0)
    whh, h0 = member(cell.weight_hh, 0), member(h, 0)
    z = sigmoid(xp[:, :H] + h0 @ whh[:, :H])
    r = sigmoid(xp[:, H : 2 * H] + h0 @ whh[:, H : 2 * H])
    n_after = np.tanh(xp[:, 2 * H :] + r * (h0 @ whh[:, 2 * H :]))
    reset_after = z * h0 + (1 - z) * n_after
    assert np.abs(reset_after - got[0].detach().numpy()).max() > 1e-2


def test_gru_cell_has_no_hidden_hidden_bias():
    cell = ClippedGRUCell(MemberRNG([0, 1, 2]), 4, 6, 5.0, encoder_init=False)
    shapes = {name: tuple(p.shape) for name, p in cell.named_parameters()}
    assert shapes == {"weight_ih": (3, 4, 18), "weight_hh": (3, 6, 18), "bias": (3, 18)}


def test_gru_step_clamps_state_and_blocks_gradient_at_clip():
    H, clip = 4, 0.5
    h = torch.tensor([[[0.0, 0.0, 0.0, 10.0]]])  # (G=1, B=1, H); unit 3 starts far beyond the clip
    big = 50.0
    # unit 0: z -> 0, n -> +1 => h' ~ 1 (clipped to +0.5); unit 1: n -> -1 (clipped to -0.5);
    # unit 2: z = 0.5, n = tanh(0.2) (inside); unit 3: z -> 1 keeps h = 10 (clipped to +0.5)
    z_pre = torch.tensor([-big, -big, 0.0, big])
    r_pre = torch.zeros(H)
    n_pre = torch.tensor([big, -big, 0.2, 0.0])
    x_proj = torch.cat([z_pre, r_pre, n_pre]).reshape(1, 1, 3 * H).requires_grad_(True)
    w_zr, w_n = torch.zeros(1, H, 2 * H), torch.zeros(1, H, H)
    out = gru_step(x_proj, h, w_zr, w_n, clip)
    assert out[0, 0, 0].item() == clip and out[0, 0, 1].item() == -clip and out[0, 0, 3].item() == clip
    assert out[0, 0, 2].item() == pytest.approx(0.5 * math.tanh(0.2), abs=1e-7)
    out.sum().backward()
    grad = x_proj.grad.reshape(3, H)
    assert torch.all(grad[:, [0, 1, 3]] == 0)  # no gradient through a clipped unit
    assert grad[0, 2] != 0 and grad[2, 2] != 0  # but gradient through the unclipped one


def test_gru_sequence_clips_every_step():
    cell = ClippedGRUCell(MemberRNG([3]), 2, 6, 0.3, encoder_init=False)
    randomize_(cell, 4, scale=3.0)
    x = torch.randn(1, 2, 20, 2, generator=torch.Generator().manual_seed(5)) * 3
    proj = (x @ cell.weight_ih.unsqueeze(1) + cell.bias[:, None, None]).transpose(1, 2)  # (P, T, B, 3H)
    states = gru_sequence(proj, torch.zeros(1, 2, 6), *cell.split_recurrent(), 0.3)
    assert states.abs().max().item() == pytest.approx(0.3)
    assert (states.abs() == 0.3).any()
    want = numpy_gru_sequence(
        member(x, 0), np.zeros((2, 6)), member(cell.weight_ih, 0), member(cell.weight_hh, 0), member(cell.bias, 0), 0.3
    )
    np.testing.assert_allclose(states[0].transpose(0, 1).detach().numpy(), want, atol=1e-5)


@pytest.mark.parametrize(
    ("encoder_init", "std_ih", "std_hh"),
    [(True, (300 + 200) ** -0.5, (300 + 200) ** -0.5), (False, 300**-0.5, 200**-0.5)],
)
def test_gru_init_statistics(encoder_init, std_ih, std_hh):
    cell = ClippedGRUCell(MemberRNG([0, 1]), 300, 200, 5.0, encoder_init=encoder_init)
    for weight, std in ((cell.weight_ih, std_ih), (cell.weight_hh, std_hh)):
        for p in range(2):
            values = weight[p].detach()
            assert values.std().item() == pytest.approx(std, rel=0.02)
            assert abs(values.mean().item()) < 0.02 * std
    assert not torch.equal(cell.weight_hh[0], cell.weight_hh[1])  # members draw independently
    assert torch.equal(cell.bias[:, :400], torch.ones(2, 400))  # z and r gates
    assert torch.equal(cell.bias[:, 400:], torch.zeros(2, 200))  # candidate


def test_population_linear_init_and_forward():
    layer = PopulationLinear(MemberRNG([0, 1]), 400, 300)
    assert layer.weight.shape == (2, 400, 300) and torch.equal(layer.bias, torch.zeros(2, 300))
    assert layer.weight[0].std().item() == pytest.approx(400**-0.5, rel=0.02)
    randomize_(layer, 1)
    x = torch.randn(2, 3, 5, 400)
    want = np.einsum("btj,jk->btk", member(x, 1), member(layer.weight, 1)) + member(layer.bias, 1)
    np.testing.assert_allclose(layer(x)[1].detach().numpy(), want, atol=1e-4)


def test_bidirectional_gru_is_forward_and_time_reversed_backward():
    P, B, T, n_in, H, clip = 2, 3, 6, 4, 5, 1.0
    bigru = BidirectionalGRU(MemberRNG([7, 8]), n_in, H, clip)
    randomize_(bigru, 9, scale=0.9)
    x = torch.randn(P, B, T, n_in, generator=torch.Generator().manual_seed(10)) * 2
    fwd, bwd, final = bigru(x)
    assert fwd.shape == bwd.shape == (P, B, T, H) and final.shape == (P, B, 2 * H)
    for p in range(P):
        h0 = member(bigru.h0, p)
        f, b = bigru.forward_cell, bigru.backward_cell
        want_f = numpy_gru_sequence(
            member(x, p),
            np.tile(h0[0], (B, 1)),
            member(f.weight_ih, p),
            member(f.weight_hh, p),
            member(f.bias, p),
            clip,
        )
        reversed_x = member(x, p)[:, ::-1]
        want_b = numpy_gru_sequence(
            reversed_x, np.tile(h0[1], (B, 1)), member(b.weight_ih, p), member(b.weight_hh, p), member(b.bias, p), clip
        )[:, ::-1]
        np.testing.assert_allclose(fwd[p].detach().numpy(), want_f, atol=1e-5)
        np.testing.assert_allclose(bwd[p].detach().numpy(), want_b, atol=1e-5)
        np.testing.assert_allclose(
            final[p].detach().numpy(), np.concatenate([want_f[:, -1], want_b[:, 0]], -1), atol=1e-5
        )
    # The backward state at time 0 has seen the whole sequence: changing the last bin changes it.
    x2 = x.clone()
    x2[:, :, -1] += 1.0
    fwd2, bwd2, _ = bigru(x2)
    assert torch.equal(fwd2[:, :, :-1], fwd[:, :, :-1]) and not torch.allclose(bwd2[:, :, 0], bwd[:, :, 0])


# ==================================================================================== 2. population independence

SEEDS = [11, 22, 33]


def _population_and_singles(cfg):
    population = LFADS(cfg, SEEDS)
    singles = [LFADS(cfg, [seed]) for seed in SEEDS]
    return population, singles


def test_member_initial_weights_equal_single_models():
    cfg = model_config(ext_input_dim=2)
    population, singles = _population_and_singles(cfg)
    pop_state = population.state_dict()
    for p, single in enumerate(singles):
        single_state = single.state_dict()
        assert pop_state.keys() == single_state.keys()
        for name, value in single_state.items():
            assert pop_state[name].shape[0] == 3, name
            assert torch.equal(pop_state[name][p : p + 1], value), name
    # and the members really are different models
    assert not torch.equal(pop_state["decoder.gen_cell.weight_hh"][0], pop_state["decoder.gen_cell.weight_hh"][1])


def _assert_outputs_equal(out_pop, out_single, p, atol=1e-6):
    pairs = {
        "output_params": (out_pop.output_params, out_single.output_params),
        "rates": (out_pop.rates, out_single.rates),
        "ic_mean": (out_pop.ic_mean, out_single.ic_mean),
        "ic_std": (out_pop.ic_std, out_single.ic_std),
        "kl_ic": (out_pop.kl_ic, out_single.kl_ic),
        "kl_co": (out_pop.kl_co, out_single.kl_co),
    }
    for name in ("gen_init", "gen_states", "factors", "con_states", "co_means", "co_stds", "gen_inputs"):
        pairs[name] = (getattr(out_pop.states, name), getattr(out_single.states, name))
    for name, (a, b) in pairs.items():
        torch.testing.assert_close(a[p : p + 1], b, atol=atol, rtol=1e-5, msg=f"{name} of member {p}")


@pytest.mark.parametrize("training", [True, False])
def test_member_forward_equals_single_model(training):
    cfg = model_config(ext_input_dim=2)
    population, singles = _population_and_singles(cfg)
    generator = torch.Generator().manual_seed(0)
    encod = torch.poisson(torch.full((5, cfg.encod_seq_len, cfg.encod_dim), 2.0), generator=generator)
    ext = torch.randn(5, cfg.recon_seq_len, 2, generator=generator)
    rates = torch.tensor([0.1, 0.25, 0.4])
    population.train(training)
    for single in singles:
        single.train(training)
    for _ in range(2):  # the second pass checks the generator streams stay aligned
        out_pop = population(encod, rates, ext)
        for p, single in enumerate(singles):
            _assert_outputs_equal(out_pop, single(encod, rates[p : p + 1], ext), p)
    if training:  # dropout and sampling are really on: members and repeated calls differ
        again = population(encod, rates, ext)
        assert not torch.allclose(again.rates, out_pop.rates)


def test_member_backward_equals_single_model():
    """Gradients of a member's loss reach only that member's weights, and equal the single model's."""
    cfg = model_config()
    population, singles = _population_and_singles(cfg)
    encod = torch.poisson(
        torch.full((4, cfg.encod_seq_len, cfg.encod_dim), 2.0), generator=torch.Generator().manual_seed(3)
    )
    rates = torch.tensor([0.1, 0.2, 0.3])
    out = population(encod, rates)
    (out.rates.mean((1, 2, 3)) * torch.tensor([1.0, 0.0, 2.0])).sum().backward()
    for p, weight in ((0, 1.0), (2, 2.0)):
        single = singles[p]
        (single(encod, rates[p : p + 1]).rates.mean() * weight).backward()
        for (name, a), (_, b) in zip(population.named_parameters(), single.named_parameters()):
            if name in ("ic_prior.mean", "co_prior.log_tau", "co_prior.log_nvar"):  # rates do not use the priors
                assert a.grad is None and b.grad is None, name
                continue
            torch.testing.assert_close(a.grad[p : p + 1], b.grad, atol=1e-6, rtol=1e-5, msg=name)
    for name, param in population.named_parameters():
        assert param.grad is None or torch.all(param.grad[1] == 0), name  # member 1's loss weight is 0: no leak


# ==================================================================================== 3. encoder


class _FixedStates(torch.nn.Module):
    """Stands in for a BidirectionalGRU: records its input and returns known, distinct states."""

    def __init__(self, hidden: int):
        super().__init__()
        self.hidden, self.seen = hidden, None

    def forward(self, x):
        self.seen = x.clone()
        P, B, T, _ = x.shape
        t = torch.arange(1, T + 1, dtype=x.dtype).reshape(1, 1, T, 1)
        unit = torch.arange(self.hidden, dtype=x.dtype).reshape(1, 1, 1, -1)
        fwd = (100 * t + unit).expand(P, B, T, self.hidden).clone()  # fwd[..., t, u] = 100 (t+1) + u
        bwd = -fwd
        final = torch.zeros(P, B, 2 * self.hidden)
        return fwd, bwd, final


@pytest.mark.parametrize(("ci_lag", "ic_enc_seq_len", "fp_len"), [(1, 0, 2), (2, 3, 2), (0, 0, 0), (1, 2, 0)])
def test_ci_lag_and_zero_padding(ci_lag, ic_enc_seq_len, fp_len):
    cfg = model_config(ci_lag=ci_lag, ic_enc_seq_len=ic_enc_seq_len, fp_len=fp_len, ci_enc_dim=3)
    H = cfg.ci_enc_dim
    encoder = Encoder(cfg, MemberRNG([0, 1]))
    encoder.ci_enc = _FixedStates(H)
    encoder.ic_enc = _FixedStates(cfg.ic_enc_dim)
    data = torch.randn(2, 3, cfg.encod_seq_len, cfg.encod_dim)
    _, _, ci = encoder(data, torch.zeros(2), MemberRNG([0, 1]), training=False)
    assert ci.shape == (2, 3, cfg.recon_seq_len, 2 * H)
    # the IC encoder sees only the leading bins (all bins when ic_enc_seq_len is 0), the CI encoder the rest
    want_ic = data[:, :, :ic_enc_seq_len] if ic_enc_seq_len else data
    assert torch.equal(encoder.ic_enc.seen, want_ic)
    assert torch.equal(encoder.ci_enc.seen, data[:, :, ic_enc_seq_len:])
    ci_steps = cfg.encod_seq_len - ic_enc_seq_len
    for t in range(cfg.recon_seq_len):
        k = t - ic_enc_seq_len  # index into the CI encoder's own time axis
        src_f, src_b = k - ci_lag, k + ci_lag
        want_f = torch.zeros(H) if not (0 <= k < ci_steps and src_f >= 0) else 100.0 * (src_f + 1) + torch.arange(H)
        want_b = (
            torch.zeros(H) if not (0 <= k < ci_steps and src_b < ci_steps) else -(100.0 * (src_b + 1) + torch.arange(H))
        )
        assert torch.equal(ci[0, 1, t, :H], want_f), f"forward half at bin {t}"
        assert torch.equal(ci[1, 2, t, H:], want_b), f"backward half at bin {t}"


def test_ci_from_real_encoder_is_lagged_bigru_output():
    cfg = model_config(ci_lag=1)
    encoder = Encoder(cfg, MemberRNG([4, 5]))
    data = torch.randn(2, 3, cfg.encod_seq_len, cfg.encod_dim)
    _, _, ci = encoder(data, torch.zeros(2), MemberRNG([0, 1]), training=False)
    fwd, bwd, _ = encoder.ci_enc(data)
    T, H = cfg.encod_seq_len, cfg.ci_enc_dim
    torch.testing.assert_close(ci[:, :, 1:T, :H], fwd[:, :, : T - 1])
    torch.testing.assert_close(ci[:, :, : T - 1, H:], bwd[:, :, 1:])
    assert torch.all(ci[:, :, 0, :H] == 0) and torch.all(ci[:, :, T - 1, H:] == 0) and torch.all(ci[:, :, T:] == 0)


def test_ic_posterior_std_has_variance_floor():
    cfg = model_config(ic_dim=3, ic_post_var_min=1e-4)
    encoder = Encoder(cfg, MemberRNG([0]))
    logvar = [math.log(0.01), 0.0, -30.0]
    mean = [0.5, -1.0, 2.0]
    with torch.no_grad():
        encoder.ic_linear.weight.zero_()
        encoder.ic_linear.bias.copy_(torch.tensor([mean + logvar]))
    data = torch.randn(1, 2, cfg.encod_seq_len, cfg.encod_dim)
    ic_mean, ic_std, _ = encoder(data, torch.zeros(1), MemberRNG([0]), training=False)
    want_std = [math.sqrt(0.01 + 1e-4), math.sqrt(1.0 + 1e-4), math.sqrt(math.exp(-30.0) + 1e-4)]
    torch.testing.assert_close(ic_mean, torch.tensor(mean).expand(1, 2, 3))
    torch.testing.assert_close(ic_std, torch.tensor(want_std).expand(1, 2, 3))


def test_ic_encoder_final_state_feeds_ic_linear():
    cfg = model_config()
    encoder = Encoder(cfg, MemberRNG([6, 7]))
    data = torch.randn(2, 3, cfg.encod_seq_len, cfg.encod_dim)
    ic_mean, ic_std, _ = encoder(data, torch.zeros(2), MemberRNG([0, 1]), training=False)
    final = encoder.ic_enc(data)[2]
    for p in range(2):
        params = member(final, p) @ member(encoder.ic_linear.weight, p) + member(encoder.ic_linear.bias, p)
        np.testing.assert_allclose(ic_mean[p].detach().numpy(), params[:, : cfg.ic_dim], atol=1e-5)
        np.testing.assert_allclose(
            ic_std[p].detach().numpy(), np.sqrt(np.exp(params[:, cfg.ic_dim :]) + 1e-4), atol=1e-5
        )


# ==================================================================================== 4. decoder / LFADS


def test_factor_readout_weights_have_unit_norm_per_factor():
    model = LFADS(model_config(gen_dim=7, fac_dim=3), [0, 1])
    readout = model.decoder.factor_readout
    assert readout.bias is None
    with torch.no_grad():
        readout.weight.mul_(torch.arange(1.0, 8.0).reshape(1, 7, 1))  # rows of different raw norms
    weight = readout.effective_weight()
    raw = readout.weight.detach().numpy()
    want = raw / np.linalg.norm(raw, axis=1, keepdims=True)  # each factor's vector over the gen_dim inputs
    np.testing.assert_allclose(weight.detach().numpy(), want, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(weight.detach().numpy(), axis=1), np.ones((2, 3)), atol=1e-6)
    # no learnable gain: scaling the raw weight changes nothing
    model.eval()
    encod = torch.rand(2, model.cfg.encod_seq_len, model.cfg.encod_dim)
    before = model(encod, torch.zeros(2)).rates
    with torch.no_grad():
        readout.weight.mul_(5.0)
    torch.testing.assert_close(model(encod, torch.zeros(2)).rates, before)


def test_decoder_matches_hand_unrolled_spec():
    """Eval mode, posterior means: controller, generator, factors and rates against a NumPy unroll."""
    cfg = model_config(ext_input_dim=2, cell_clip=0.9)
    model = LFADS(cfg, [3, 4]).eval()
    randomize_(model, 12, scale=0.6)
    g = torch.Generator().manual_seed(13)
    encod = torch.poisson(torch.full((3, cfg.encod_seq_len, cfg.encod_dim), 2.0), generator=g)
    ext = torch.randn(3, cfg.recon_seq_len, 2, generator=g)
    out = model(encod, torch.zeros(2), ext)
    ic_mean, _, ci = model.encode(encod, torch.zeros(2))
    dec, co_dim, clip = model.decoder, cfg.co_dim, cfg.cell_clip
    for p in range(2):
        w_fac = member(dec.factor_readout.weight, p)
        w_fac = w_fac / np.linalg.norm(w_fac, axis=0, keepdims=True)
        gen_h = member(ic_mean, p) @ member(dec.ic_to_gen.weight, p) + member(dec.ic_to_gen.bias, p)
        np.testing.assert_allclose(out.states.gen_init[p].detach().numpy(), gen_h, atol=1e-5)
        factor = gen_h @ w_fac
        con_h = np.tile(member(dec.con_h0, p), (3, 1))
        for t in range(cfg.recon_seq_len):
            con_in = np.concatenate([member(ci, p)[:, t], factor], -1)
            con_h = numpy_gru_step(
                con_in,
                con_h,
                member(dec.con_cell.weight_ih, p),
                member(dec.con_cell.weight_hh, p),
                member(dec.con_cell.bias, p),
                clip,
            )
            co_params = con_h @ member(dec.co_linear.weight, p) + member(dec.co_linear.bias, p)
            co_mean, co_std = co_params[:, :co_dim], np.exp(0.5 * co_params[:, co_dim:])
            gen_in = np.concatenate([co_mean, ext[:, t].double().numpy()], -1)
            gen_h = numpy_gru_step(
                gen_in,
                gen_h,
                member(dec.gen_cell.weight_ih, p),
                member(dec.gen_cell.weight_hh, p),
                member(dec.gen_cell.bias, p),
                clip,
            )
            factor = gen_h @ w_fac
            log_rates = factor @ member(model.readout[0].weight, p) + member(model.readout[0].bias, p)
            for name, want in (
                ("con_states", con_h),
                ("co_means", co_mean),
                ("co_stds", co_std),
                ("gen_inputs", co_mean),
                ("gen_states", gen_h),
                ("factors", factor),
            ):
                np.testing.assert_allclose(
                    getattr(out.states, name)[p, :, t].detach().numpy(), want, atol=2e-5, err_msg=f"{name} t={t}"
                )
            np.testing.assert_allclose(out.output_params[p, :, t, :, 0].detach().numpy(), log_rates, atol=2e-5)
            np.testing.assert_allclose(out.rates[p, :, t].detach().numpy(), np.exp(log_rates), rtol=1e-4)


def test_generator_carries_undropped_state_in_training():
    """Dropout hits only the copy of the generator state going to the factors, never the carried state."""
    cfg = model_config(ext_input_dim=0, cell_clip=5.0)
    model = LFADS(cfg, [5]).train()
    encod = torch.rand(4, cfg.encod_seq_len, cfg.encod_dim)
    out = model(encod, torch.tensor([0.5]), sample=True)
    gen = model.decoder.gen_cell
    states, inputs = (
        out.states.gen_states[0].detach().double().numpy(),
        out.states.gen_inputs[0].detach().double().numpy(),
    )
    h = out.states.gen_init[0].detach().double().numpy()
    for t in range(cfg.recon_seq_len):
        h_next = numpy_gru_step(
            inputs[:, t], h, member(gen.weight_ih, 0), member(gen.weight_hh, 0), member(gen.bias, 0), 5.0
        )
        np.testing.assert_allclose(states[:, t], h_next, atol=1e-5, err_msg=f"t={t}")
        h = states[:, t]
    w_fac = model.decoder.factor_readout.effective_weight()[0].detach().double().numpy()
    undropped = states @ w_fac
    assert np.abs(out.states.factors[0].detach().numpy() - undropped).max() > 1e-3  # the factor copy was dropped


@pytest.mark.parametrize("dims", [dict(co_dim=0), dict(ci_enc_dim=0), dict(con_dim=0)])
def test_controller_off(dims):
    cfg = model_config(**dims)
    model = LFADS(cfg, [0, 1])
    assert model.co_prior is None and model.encoder.ci_enc is None and not hasattr(model.decoder, "con_cell")
    assert model.decoder.gen_cell.weight_ih.shape == (2, 0, 3 * cfg.gen_dim)
    encod = torch.rand(3, cfg.encod_seq_len, cfg.encod_dim)
    out = model(encod, torch.full((2,), 0.1))
    for name in ("con_states", "co_means", "co_stds", "gen_inputs"):
        assert (
            getattr(out.states, name).shape[:3] == (2, 3, cfg.recon_seq_len) and getattr(out.states, name).numel() == 0
        )
    assert torch.equal(out.kl_co, torch.zeros(2))
    assert out.rates.shape == (2, 3, cfg.recon_seq_len, cfg.recon_dim)
    assert set(model.recurrent_kernels()["con"]) == set() and model.recurrent_kernels()["ci_enc"] == []


@pytest.mark.parametrize("reconstruction", ["poisson", "gaussian"])
@pytest.mark.parametrize(("cs_dim", "fp_len", "ext"), [(0, 0, 0), (2, 3, 0), (1, 0, 2), (0, 2, 3)])
def test_output_shapes(reconstruction, cs_dim, fp_len, ext):
    cfg = model_config(cs_dim=cs_dim, fp_len=fp_len, ext_input_dim=ext, reconstruction=reconstruction)
    model = LFADS(cfg, [0, 1, 2])
    B, T, N = 4, cfg.recon_seq_len, cfg.recon_dim
    assert (cfg.encod_seq_len, cfg.encod_dim) == (12 - fp_len, 6 - cs_dim)
    encod = torch.rand(B, cfg.encod_seq_len, cfg.encod_dim)
    out = model(encod, torch.full((3,), 0.1), torch.randn(B, T, ext) if ext else None)
    n_params = {"poisson": 1, "gaussian": 2}[reconstruction]
    assert out.output_params.shape == (3, B, T, N, n_params)
    assert out.rates.shape == (3, B, T, N)
    assert out.ic_mean.shape == out.ic_std.shape == (3, B, cfg.ic_dim)
    assert out.states.gen_init.shape == (3, B, cfg.gen_dim)
    assert out.states.gen_states.shape == (3, B, T, cfg.gen_dim)
    assert out.states.factors.shape == (3, B, T, cfg.fac_dim)
    assert out.states.con_states.shape == (3, B, T, cfg.con_dim)
    assert out.states.co_means.shape == out.states.co_stds.shape == out.states.gen_inputs.shape == (3, B, T, cfg.co_dim)
    assert out.kl_ic.shape == out.kl_co.shape == (3,)
    torch.testing.assert_close(out.rates, RECONSTRUCTIONS[reconstruction]().mean(out.output_params))


def test_ext_input_reaches_generator():
    cfg = model_config(ext_input_dim=2)
    model = LFADS(cfg, [0]).eval()
    encod = torch.rand(2, cfg.encod_seq_len, cfg.encod_dim)
    ext = torch.zeros(2, cfg.recon_seq_len, 2)
    base = model(encod, torch.zeros(1), ext)
    ext[:, 5] = 1.0
    moved = model(encod, torch.zeros(1), ext)
    # bins before 5 are untouched, bin 5 on is changed
    torch.testing.assert_close(moved.rates[:, :, :5], base.rates[:, :, :5])
    assert not torch.allclose(moved.rates[:, :, 5], base.rates[:, :, 5])


def test_eval_is_deterministic_and_sampling_changes_outputs():
    cfg = model_config()
    model = LFADS(cfg, [0, 1]).eval()
    encod = torch.rand(3, cfg.encod_seq_len, cfg.encod_dim)
    rates = torch.full((2,), 0.3)
    rng_state = [s.clone() for s in model.rng.get_state()]
    first, second = model(encod, rates), model(encod, rates)
    assert torch.equal(first.rates, second.rates)
    assert all(torch.equal(a, b) for a, b in zip(rng_state, model.rng.get_state()))  # no random draws
    torch.testing.assert_close(first.states.gen_inputs, first.states.co_means)  # means, not samples
    sampled = model(encod, rates, sample=True)
    assert not torch.allclose(sampled.rates, first.rates)
    assert not torch.allclose(sampled.states.gen_inputs, sampled.states.co_means)
    # the posterior samples are mean + std * noise: the standardised residual looks standard normal
    noise = ((sampled.states.gen_inputs - sampled.states.co_means) / sampled.states.co_stds).flatten()
    assert noise.abs().max() < 6 and noise.std() > 0.3


def test_training_mode_dropout_changes_outputs_and_rate_zero_matches_eval():
    cfg = model_config()
    model = LFADS(cfg, [0, 1])
    encod = torch.rand(3, cfg.encod_seq_len, cfg.encod_dim)
    model.eval()
    eval_out = model(encod, torch.zeros(2))
    model.train()
    no_dropout = model(encod, torch.zeros(2), sample=False)
    torch.testing.assert_close(no_dropout.rates, eval_out.rates)
    dropped = model(encod, torch.full((2,), 0.5), sample=False)
    assert not torch.allclose(dropped.rates, eval_out.rates)


def test_member_dropout_scales_kept_entries():
    rng = MemberRNG([0, 1])
    x = torch.ones(1, 200, 50)
    out = member_dropout(x, torch.tensor([0.0, 0.4]), rng, training=True)
    assert torch.equal(out[0], torch.ones(200, 50))
    kept = out[1][out[1] != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.6))
    assert (out[1] == 0).float().mean().item() == pytest.approx(0.4, abs=0.02)
    assert torch.equal(member_dropout(x, torch.tensor([0.5, 0.5]), rng, training=False), x)


# ==================================================================================== 5. priors


def test_prior_initial_values():
    gp = GaussianPrior(MemberRNG([0, 1]), 3, 0.1)
    assert torch.equal(gp.mean, torch.zeros(2, 3))
    torch.testing.assert_close(gp.logvar, torch.full((2, 3), math.log(0.1)))
    assert not gp.logvar.requires_grad and "logvar" not in dict(gp.named_parameters())
    ar = AutoregressivePrior(MemberRNG([0]), 2, 10.0, 0.1)
    torch.testing.assert_close(ar.log_tau, torch.full((1, 2), math.log(10.0)))
    torch.testing.assert_close(ar.log_nvar, torch.full((1, 2), math.log(0.1)))


def test_gaussian_prior_kl_closed_form_and_monte_carlo():
    P, B, D = 2, 4, 3
    prior = GaussianPrior(MemberRNG([0, 1]), D, 0.1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        prior.mean.copy_(torch.randn(P, D, generator=g) * 0.3)
    post_mean = torch.randn(P, B, D, generator=g) * 0.4
    post_std = torch.rand(P, B, D, generator=g) * 0.4 + 0.1
    kl = prior.kl(post_mean, post_std).detach().numpy()
    assert kl.shape == (P,)
    mu_p, var_p = prior.mean.detach().double().numpy()[:, None], 0.1
    mu_q, sd_q = post_mean.double().numpy(), post_std.double().numpy()
    closed = 0.5 * (np.log(var_p / sd_q**2) + (sd_q**2 + (mu_q - mu_p) ** 2) / var_p - 1)
    np.testing.assert_allclose(kl, closed.sum(-1).mean(-1), rtol=1e-5)
    # Monte Carlo: E_q[log q - log p], summed over dims, averaged over the batch
    rng = np.random.default_rng(1)
    z = mu_q + sd_q * rng.standard_normal((200_000, P, B, D))
    log_ratio = stats.norm.logpdf(z, mu_q, sd_q) - stats.norm.logpdf(z, mu_p, math.sqrt(var_p))
    per_draw = log_ratio.sum(-1).mean(-1)  # (draws, P)
    stderr = per_draw.std(0) / math.sqrt(per_draw.shape[0])
    assert np.all(np.abs(per_draw.mean(0) - kl) < 4 * stderr)


def _ar_log_prob_by_hand(z, tau, nvar):
    """z (P, B, T, D); tau, nvar (P, D) -> (P, B) with scipy's normal log-densities."""
    alpha = np.exp(-1.0 / tau)[:, None, :]
    nvar = nvar[:, None, :]
    out = stats.norm.logpdf(z[:, :, 0], 0.0, np.sqrt(nvar / (1 - alpha**2))).sum(-1)
    for t in range(1, z.shape[2]):
        out += stats.norm.logpdf(z[:, :, t], alpha * z[:, :, t - 1], np.sqrt(nvar)).sum(-1)
    return out


def test_autoregressive_prior_log_prob_and_kl():
    P, B, T, D = 2, 3, 5, 2
    prior = AutoregressivePrior(MemberRNG([0, 1]), D, 10.0, 0.1)
    tau = np.array([[10.0, 3.0], [1.5, 25.0]])
    nvar = np.array([[0.1, 0.5], [0.05, 2.0]])
    with torch.no_grad():
        prior.log_tau.copy_(torch.tensor(np.log(tau)))
        prior.log_nvar.copy_(torch.tensor(np.log(nvar)))
    g = torch.Generator().manual_seed(2)
    z = torch.randn(P, B, T, D, generator=g)
    log_p = prior.log_prob(z)
    assert log_p.shape == (P, B)
    want = _ar_log_prob_by_hand(z.double().numpy(), tau, nvar)
    np.testing.assert_allclose(log_p.detach().numpy(), want, rtol=1e-5)
    # the stationary first step: with tau = 10, alpha = exp(-0.1), var = 0.1 / (1 - exp(-0.2)) = 0.5516...
    z1 = torch.zeros(1, 1, 1, 1)
    one = AutoregressivePrior(MemberRNG([0]), 1, 10.0, 0.1)
    var0 = 0.1 / (1 - math.exp(-0.2))
    assert one.log_prob(z1).item() == pytest.approx(-0.5 * math.log(2 * math.pi * var0), rel=1e-6)

    post_mean = torch.randn(P, B, T, D, generator=g) * 0.2
    post_std = torch.rand(P, B, T, D, generator=g) * 0.5 + 0.1
    kl = prior.kl(post_mean, post_std, z)
    log_q = stats.norm.logpdf(z.double().numpy(), post_mean.double().numpy(), post_std.double().numpy()).sum((-2, -1))
    np.testing.assert_allclose(kl.detach().numpy(), (log_q - want).mean(-1), rtol=1e-5)


def test_autoregressive_prior_expected_kl_is_the_gaussian_kl_and_the_mean_of_the_sampled_one():
    P, B, T, D = 2, 3, 6, 2
    prior = AutoregressivePrior(MemberRNG([0, 1]), D, 10.0, 0.1)
    tau, nvar = np.array([[10.0, 3.0], [1.5, 25.0]]), np.array([[0.1, 0.5], [0.05, 2.0]])
    with torch.no_grad():
        prior.log_tau.copy_(torch.tensor(np.log(tau)))
        prior.log_nvar.copy_(torch.tensor(np.log(nvar)))
    g = torch.Generator().manual_seed(3)
    mean = torch.randn(P, B, T, D, generator=g, dtype=torch.float64) * 0.5
    std = torch.rand(P, B, T, D, generator=g, dtype=torch.float64) * 0.8 + 0.1
    exact = prior.expected_kl(mean, std)
    want = ar_kl_by_hand(mean.numpy(), std.numpy(), tau, nvar).mean(-1)
    np.testing.assert_allclose(exact.detach().numpy(), want, rtol=1e-6)
    # the one-sample estimate of training averages to it
    samples = mean + std * torch.randn(4000, P, B, T, D, generator=g, dtype=torch.float64)
    sampled = torch.stack([prior.kl(mean, std, z) for z in samples]).mean(0)
    np.testing.assert_allclose(sampled.detach().numpy(), want, rtol=0.02)


# ==================================================================================== 6. reconstructions


def test_poisson_nll_and_mean():
    rng = np.random.default_rng(0)
    log_rate = rng.normal(0.0, 1.0, size=(2, 3, 4, 5, 1))
    counts = rng.poisson(2.0, size=(2, 3, 4, 5)).astype(float)
    model = Poisson()
    assert model.n_params == 1 and RECONSTRUCTIONS["poisson"] is Poisson
    nll = model.nll(torch.tensor(log_rate), torch.tensor(counts)).numpy()
    np.testing.assert_allclose(nll, np.exp(log_rate[..., 0]) - counts * log_rate[..., 0], rtol=1e-12)
    # the same as scipy's log-pmf up to the data-only log k! term
    np.testing.assert_allclose(
        nll, -stats.poisson.logpmf(counts, np.exp(log_rate[..., 0])) - gammaln(counts + 1), rtol=1e-10, atol=1e-10
    )
    np.testing.assert_allclose(model.mean(torch.tensor(log_rate)).numpy(), np.exp(log_rate[..., 0]))
    # the references' NLL (torch's poisson_nll_loss with full=True, as lfads-torch; TensorFlow's log_poisson_loss
    # with compute_full_loss is the same formula) is ours plus Stirling's k log k - k + 0.5 log(2 pi k) for k > 1
    k = torch.tensor(counts)
    theirs = torch.nn.functional.poisson_nll_loss(
        torch.tensor(log_rate[..., 0]), k, log_input=True, full=True, reduction="none"
    )
    stirling = torch.where(k > 1, k * k.log() - k + 0.5 * torch.log(2 * math.pi * k), 0.0)
    np.testing.assert_allclose(theirs.numpy(), nll + stirling.numpy(), rtol=1e-10, atol=1e-10)


def test_gaussian_nll_and_mean():
    rng = np.random.default_rng(1)
    params = rng.normal(0.0, 1.0, size=(2, 3, 4, 5, 2))
    target = rng.normal(0.0, 2.0, size=(2, 3, 4, 5))
    model = Gaussian()
    assert model.n_params == 2
    nll = model.nll(torch.tensor(params), torch.tensor(target)).numpy()
    want = -stats.norm.logpdf(target, params[..., 0], np.exp(0.5 * params[..., 1]))
    np.testing.assert_allclose(nll, want, rtol=1e-10)
    np.testing.assert_allclose(model.mean(torch.tensor(params)).numpy(), params[..., 0])


# ==================================================================================== 7. augmentations


def test_coordinated_dropout_masks():
    B, T, N, start = 40, 20, 10, 3
    encod = torch.rand(B, T, N) + 0.5  # no zeros, so zero in the output means dropped
    rates = torch.tensor([0.0, 0.3, 0.6])
    inputs, grad_mask = coordinated_dropout(encod, rates, 0.0, MemberRNG([0, 1, 2]), start)
    assert inputs.shape == grad_mask.shape == (3, B, T, N)
    # cd_rate 0: unchanged data, gradient everywhere
    assert torch.equal(inputs[0], encod) and torch.equal(grad_mask[0], torch.ones(B, T, N))
    for p in (1, 2):
        rate = rates[p].item()
        assert torch.equal(inputs[p, :, :start], encod[:, :start])  # IC-only bins untouched
        assert torch.all(grad_mask[p, :, :start] == 1)
        body, data, mask = inputs[p, :, start:], encod[:, start:], grad_mask[p, :, start:]
        dropped = body == 0
        torch.testing.assert_close(body[~dropped], data[~dropped] / (1 - rate))
        n = dropped.numel()
        assert abs(dropped.float().mean().item() - rate) < 4 * math.sqrt(rate * (1 - rate) / n)
        assert torch.equal(mask, dropped.float())  # gradient only where the input was dropped
    # a fresh draw each call
    again, _ = coordinated_dropout(encod, rates, 0.0, MemberRNG([0, 1, 2]), start)
    assert torch.equal(again, inputs)  # same seeds, same masks
    other, _ = coordinated_dropout(encod, rates, 0.0, MemberRNG([5, 6, 7]), start)
    assert not torch.equal(other[1], inputs[1])


def test_coordinated_dropout_pass_rate():
    encod = torch.rand(60, 20, 10) + 0.5
    inputs, grad_mask = coordinated_dropout(encod, torch.tensor([0.4]), 0.5, MemberRNG([3]), 0)
    dropped = inputs[0] == 0
    assert torch.all(grad_mask[0][dropped] == 1)
    assert grad_mask[0][~dropped].mean().item() == pytest.approx(0.5, abs=0.03)


def test_coordinated_dropout_pass_rate_with_per_member_inputs():
    """Inputs already per member (P, B, T, N), as after spike jitter or temporal shift: the same masks as for
    shared inputs under the same seeds (it raised a shape RuntimeError)."""
    encod = torch.rand(8, 6, 5) + 0.5
    rates = torch.tensor([0.3, 0.5])
    shared = coordinated_dropout(encod, rates, 0.5, MemberRNG([4, 5]), 1)
    per_member = coordinated_dropout(encod.expand(2, -1, -1, -1), rates, 0.5, MemberRNG([4, 5]), 1)
    assert per_member[1].shape == (2, 8, 6, 5)
    for ours, want in zip(per_member, shared, strict=True):
        assert torch.equal(ours, want)


def test_block_gradients_value_and_gradient():
    P, B, T_enc, N_enc, T, N = 2, 3, 5, 4, 7, 6
    g = torch.Generator().manual_seed(0)
    loss = torch.rand(P, B, T, N, generator=g).requires_grad_(True)
    mask = (torch.rand(P, B, T_enc, N_enc, generator=g) < 0.5).float()
    out = block_gradients(loss, mask)
    assert torch.equal(out, loss.detach())
    weights = torch.rand(P, B, T, N, generator=g)
    (out * weights).sum().backward()
    want = torch.ones(P, B, T, N)
    want[:, :, :T_enc, :N_enc] = mask
    assert torch.equal(loss.grad, want * weights)
    # held-out neurons and forward bins always pass gradient
    assert torch.all(loss.grad[:, :, T_enc:] != 0) and torch.all(loss.grad[:, :, :, N_enc:] != 0)
    assert torch.all(loss.grad[:, :, :T_enc, :N_enc][mask == 0] == 0)


def test_pad_to():
    mask = torch.zeros(2, 3, 4)
    padded = pad_to(mask, torch.Size([2, 5, 7]))
    assert padded.shape == (2, 5, 7)
    assert padded.sum().item() == 2 * 5 * 7 - 2 * 3 * 4 and torch.all(padded[:, :3, :4] == 0)


def test_reconstruction_loss_mean_mask_and_weight():
    P, B, T, N = 2, 3, 6, 5
    g = torch.Generator().manual_seed(1)
    nll = torch.rand(P, B, T, N, generator=g).requires_grad_(True)
    grad_mask = (torch.rand(P, B, 4, 3, generator=g) < 0.5).float()
    weight = (torch.rand(B, 4, 3, generator=g) < 0.7).float() / 0.7
    loss = reconstruction_loss(nll, grad_mask, weight)
    w = torch.ones(B, T, N)
    w[:, :4, :3] = weight
    torch.testing.assert_close(loss, (nll.detach() * w).mean((1, 2, 3)))
    loss.sum().backward()
    m = torch.ones(P, B, T, N)
    m[:, :, :4, :3] = grad_mask
    torch.testing.assert_close(nll.grad, m * w / (B * T * N))
    assert torch.allclose(reconstruction_loss(nll.detach()), nll.detach().mean((1, 2, 3)))


def test_sample_validation_mask_fixed_under_seed():
    shape, rate = (30, 12, 8), 0.25
    first = sample_validation_mask(shape, rate, seed=3, start_bin=2)
    assert torch.equal(first, sample_validation_mask(shape, rate, seed=3, start_bin=2))
    assert not torch.equal(first, sample_validation_mask(shape, rate, seed=4, start_bin=2))
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert torch.all(first[:, :2] == 1)
    held_back = (first[:, 2:] == 0).float().mean().item()
    assert abs(held_back - rate) < 4 * math.sqrt(rate * (1 - rate) / (30 * 10 * 8))


# ==================================================================================== 8. objective


@pytest.mark.parametrize(
    ("epoch", "start", "increase", "want"),
    [
        (0, 0, 80, 1 / 81),
        (1, 0, 80, 2 / 81),
        (79, 0, 80, 80 / 81),
        (80, 0, 80, 1.0),
        (500, 0, 80, 1.0),
        (3, 5, 10, 0.0),
        (4, 5, 10, 0.0),
        (5, 5, 10, 1 / 11),
        (14, 5, 10, 10 / 11),
        (15, 5, 10, 1.0),
        (0, 0, 0, 1.0),
    ],
)
def test_ramp(epoch, start, increase, want):
    assert ramp(epoch, start, increase) == pytest.approx(want, abs=1e-12)


def test_total_loss_formula():
    t = torch.tensor
    hp = {"kl_ic_weight": t([0.1, 0.2]), "kl_co_weight": t([0.01, 0.02])}
    loss = total_loss(t([1.0, 2.0]), t([3.0, 4.0]), t([5.0, 6.0]), t([7.0, 8.0]), hp, 0.5, 0.25, 10.0)
    # 10 * (1 + 0.25 * 7 + 0.5 * (0.1 * 3 + 0.01 * 5)) and 10 * (2 + 0.25 * 8 + 0.5 * (0.2 * 4 + 0.02 * 6))
    torch.testing.assert_close(loss, t([29.25, 44.6]))


def test_l2_penalty_by_hand_excludes_zero_scales_from_size():
    cfg = model_config(ic_enc_dim=3, ci_enc_dim=4, con_dim=5, gen_dim=6)
    model = LFADS(cfg, [0, 1])
    scales = {
        "ic_enc": torch.tensor([0.0, 0.5]),
        "ci_enc": torch.tensor([0.0, 0.0]),
        "gen": torch.tensor([2.0, 0.0]),
        "con": torch.tensor([3.0, 1.0]),
    }
    got = model.l2_penalty(scales).detach().numpy()

    def sq(w, p):
        return float((member(w, p) ** 2).sum())

    ic = model.encoder.ic_enc
    gen, con = model.decoder.gen_cell.weight_hh, model.decoder.con_cell.weight_hh
    # member 0: gen (6 x 18 = 108 elements) and con (5 x 15 = 75); the ic/ci encoders have scale 0
    want0 = (2.0 * 0.5 * sq(gen, 0) + 3.0 * 0.5 * sq(con, 0)) / (108 + 75)
    # member 1: both IC-encoder directions (2 x 3 x 9 = 54) and con (75)
    ic_sq = sq(ic.forward_cell.weight_hh, 1) + sq(ic.backward_cell.weight_hh, 1)
    want1 = (0.5 * 0.5 * ic_sq + 1.0 * 0.5 * sq(con, 1)) / (54 + 75)
    np.testing.assert_allclose(got, [want0, want1], rtol=1e-5)
    zero = {name: torch.zeros(2) for name in scales}
    assert torch.equal(model.l2_penalty(zero), torch.zeros(2))


# ==================================================================================== 9. optimizer


def _quadratic_grads(params, targets, weights):
    """Set each param's grad to weights * (param - target): a per-member loss that does not mix members."""
    for p, target, w in zip(params, targets, weights):
        p.grad = (w * (p.detach() - target)).clone()


def _make_params(P, seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (5,), (2, 2, 2)]
    params = [torch.nn.Parameter(torch.randn(P, *s, generator=g)) for s in shapes]
    targets = [torch.randn(P, *s, generator=g) for s in shapes]
    weights = [torch.rand(P, *s, generator=g) * 3 for s in shapes]
    return params, targets, weights


@pytest.mark.parametrize(("optimizer", "weight_decay"), [(torch.optim.Adam, 0.0), (torch.optim.AdamW, 0.1)])
def test_population_adam_matches_torch(optimizer, weight_decay):
    params, targets, weights = _make_params(1, 0)
    reference = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ours = PopulationAdam(params, eps=1e-8, weight_decay=weight_decay)
    theirs = optimizer(reference, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    for _ in range(8):
        _quadratic_grads(params, targets, weights)
        _quadratic_grads(reference, targets, weights)
        ours.step(torch.tensor([1e-2]), torch.tensor([True]))
        theirs.step()
        for a, b in zip(params, reference):
            torch.testing.assert_close(a.detach(), b.detach(), atol=1e-6, rtol=0)
    assert ours.steps.item() == 8


def test_population_adam_epsilon_hat_is_tensorflows_adam():
    """epsilon_hat: TensorFlow / Keras Adam, written out in NumPy: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t),
    w -= lr_t m / (sqrt(v) + eps). A large eps and small gradients make the convention matter at every step."""
    params, targets, weights = _make_params(2, 4)
    reference = [p.detach().double().numpy().copy() for p in params]
    m = [np.zeros_like(w) for w in reference]
    v = [np.zeros_like(w) for w in reference]
    eps, lr, b1, b2 = 1e-3, np.array([1e-2, 3e-3]), 0.9, 0.999
    ours = PopulationAdam(params, eps=eps, epsilon_hat=True)
    plain = PopulationAdam([torch.nn.Parameter(p.detach().clone()) for p in params], eps=eps / math.sqrt(1 - b2))
    for t in range(1, 9):
        for p, q, target, w in zip(params, plain.params, targets, weights, strict=True):
            p.grad = 1e-3 * w * (p.detach() - target)
            q.grad = 1e-3 * w * (q.detach() - target)
        ours.step(torch.tensor(lr), torch.tensor([True, True]))
        plain.step(torch.tensor(lr), torch.tensor([True, True]))
        for i, (p, target, w) in enumerate(zip(params, targets, weights, strict=True)):
            g = 1e-3 * (w * (torch.from_numpy(reference[i]).float() - target)).double().numpy()
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            lr_t = (lr * math.sqrt(1 - b2**t) / (1 - b1**t)).reshape(-1, *[1] * (g.ndim - 1))
            reference[i] = reference[i] - lr_t * m[i] / (np.sqrt(v[i]) + eps)
            np.testing.assert_allclose(p.detach().double().numpy(), reference[i], rtol=0, atol=1e-6)
    # eps / sqrt(1 - b2), the step-1 equivalent the mapping used to be, drifts away from TensorFlow's run
    drift = max(float((a - b).detach().abs().max()) for a, b in zip(params, plain.params, strict=True))
    assert drift > 1e-4


def test_population_adam_per_member_lr_equals_separate_runs():
    params, targets, weights = _make_params(2, 1)
    start = params[0].detach().clone()
    single = [[torch.nn.Parameter(p.detach()[m : m + 1].clone()) for p in params] for m in range(2)]
    lrs = [1e-3, 1e-2]
    pop_opt = PopulationAdam(params, eps=1e-8)
    single_opts = [PopulationAdam(s, eps=1e-8) for s in single]
    for _ in range(5):
        _quadratic_grads(params, targets, weights)
        pop_opt.step(torch.tensor(lrs), torch.tensor([True, True]))
        for m in range(2):
            _quadratic_grads(single[m], [t[m : m + 1] for t in targets], [w[m : m + 1] for w in weights])
            single_opts[m].step(torch.tensor([lrs[m]]), torch.tensor([True]))
    for m in range(2):
        for a, b in zip(params, single[m]):
            torch.testing.assert_close(a.detach()[m : m + 1], b.detach(), atol=1e-7, rtol=0)
    # and the two learning rates really gave different trajectories
    moved = [float((params[0].detach()[m] - start[m]).abs().sum()) for m in range(2)]
    assert moved[1] > 3 * moved[0]


def test_population_adam_inactive_members_unchanged_then_start_fresh():
    params, targets, weights = _make_params(2, 2)
    start = [p.detach().clone() for p in params]
    opt = PopulationAdam(params, eps=1e-8, weight_decay=0.05)
    for _ in range(3):
        _quadratic_grads(params, targets, weights)
        params[0].grad[1] = float("nan")  # an inactive (diverged) member's grads may be anything
        opt.step(torch.tensor([1e-2, 1e-2]), torch.tensor([True, False]))
    for p, p0, m, v in zip(params, start, opt.exp_avg, opt.exp_avg_sq):
        assert torch.equal(p.detach()[1], p0[1])
        assert torch.all(m[1] == 0) and torch.all(v[1] == 0)
        assert not torch.equal(p.detach()[0], p0[0])
    assert opt.steps.tolist() == [3.0, 0.0]
    # member 1 now starts: its first step is exactly a fresh AdamW's first step
    reference = [torch.nn.Parameter(p.detach()[1].clone()) for p in params]
    torch_opt = torch.optim.AdamW(reference, lr=1e-2, eps=1e-8, weight_decay=0.05)
    _quadratic_grads(params, targets, weights)
    _quadratic_grads(reference, [t[1] for t in targets], [w[1] for w in weights])
    opt.step(torch.tensor([1e-2, 1e-2]), torch.tensor([False, True]))
    torch_opt.step()
    for a, b in zip(params, reference):
        torch.testing.assert_close(a.detach()[1], b.detach(), atol=1e-6, rtol=0)
    assert opt.steps.tolist() == [3.0, 1.0]


def test_population_adam_state_round_trip():
    params, targets, weights = _make_params(2, 3)
    opt = PopulationAdam(params, eps=1e-8)
    _quadratic_grads(params, targets, weights)
    opt.step(torch.tensor([1e-2, 1e-3]), torch.tensor([True, True]))
    state = opt.state_dict()
    copy_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    copy = PopulationAdam(copy_params, eps=1e-8)
    copy.load_state_dict(state)
    for ps in (params, copy_params):
        _quadratic_grads(ps, targets, weights)
    opt.step(torch.tensor([1e-2, 1e-3]), torch.tensor([True, True]))
    copy.step(torch.tensor([1e-2, 1e-3]), torch.tensor([True, True]))
    for a, b in zip(params, copy_params):
        assert torch.equal(a, b)
    with pytest.raises(ValueError):
        PopulationAdam(params[:2], eps=1e-8).load_state_dict(state)


def test_clip_member_grad_norms_per_member():
    a = torch.nn.Parameter(torch.zeros(2, 2))
    b = torch.nn.Parameter(torch.zeros(2, 1))
    c = torch.nn.Parameter(torch.zeros(2, 3))  # no gradient: treated as zeros
    a.grad = torch.tensor([[3.0, 0.0], [0.3, 0.0]])
    b.grad = torch.tensor([[4.0], [0.4]])
    norms = clip_member_grad_norms([a, b, c], max_norm=1.0)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))  # sqrt(9 + 16), sqrt(0.09 + 0.16)
    torch.testing.assert_close(a.grad, torch.tensor([[0.6, 0.0], [0.3, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(b.grad, torch.tensor([[0.8], [0.4]]), atol=1e-6, rtol=0)
    assert torch.equal(c.grad, torch.zeros(2, 3))
    assert torch.equal(a.grad[1], torch.tensor([0.3, 0.0]))  # below max_norm: untouched, exactly
    clipped = torch.sqrt(a.grad[0].square().sum() + b.grad[0].square().sum())
    assert clipped.item() == pytest.approx(1.0, abs=1e-6)


# ==================================================================================== 10. metrics


def test_smooth():
    previous = torch.tensor([math.nan, 1.0, 4.0])
    current = torch.tensor([2.0, 2.0, math.nan])
    out = smooth(previous, current)
    assert out[0].item() == 2.0 and out[1].item() == pytest.approx(0.3 * 1.0 + 0.7 * 2.0)
    assert math.isnan(out[2].item())


def test_bits_per_spike_by_hand():
    bps = bits_per_spike(
        torch.tensor([90.0, 100.0, 120.0], dtype=torch.float64), torch.tensor(100.0, dtype=torch.float64), 50.0
    )
    torch.testing.assert_close(
        bps, torch.tensor([10 / (50 * math.log(2)), 0.0, -20 / (50 * math.log(2))], dtype=torch.float64)
    )
    assert torch.isnan(bits_per_spike(torch.tensor([1.0]), torch.tensor(2.0), 0.0)).all()


def test_null_nll_sum_and_poisson_nll_by_hand():
    counts = torch.tensor([[[0.0, 2.0], [1.0, 4.0]], [[3.0, 0.0], [0.0, 2.0]]], dtype=torch.float64)  # (n=2, T=2, N=2)
    # neuron means: (0 + 1 + 3 + 0) / 4 = 1, (2 + 4 + 0 + 2) / 4 = 2
    want = (4 * 1.0 - 4 * math.log(1.0)) + (4 * 2.0 - 8 * math.log(2.0))
    assert null_nll_sum(counts) == pytest.approx(want)
    nll = poisson_nll(torch.tensor([0.0, 2.0], dtype=torch.float64), torch.tensor([0.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(nll, torch.tensor([1e-9, 2.0 - 3 * math.log(2.0)], dtype=torch.float64))


def test_r2_score_by_hand():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(6, 5, 4))
    pred = truth[None] + rng.normal(scale=[[[[0.1]]], [[[0.8]]]], size=(2, 6, 5, 4))
    got = r2_score(torch.tensor(pred), torch.tensor(truth)).numpy()
    flat_t = truth.reshape(-1, 4)
    want = []
    for p in range(2):
        flat_p = pred[p].reshape(-1, 4)
        ss_res = ((flat_p - flat_t) ** 2).sum(0)
        ss_tot = ((flat_t - flat_t.mean(0)) ** 2).sum(0)
        want.append(np.mean(1 - ss_res / ss_tot))
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert got[0] > got[1]
    perfect = r2_score(torch.tensor(truth)[None], torch.tensor(truth))
    mean_only = r2_score(
        torch.tensor(np.broadcast_to(truth.mean((0, 1)), truth.shape).copy())[None], torch.tensor(truth)
    )
    assert perfect.item() == 1.0 and mean_only.item() == pytest.approx(0.0, abs=1e-12)


def test_r2_accumulator_over_batches_equals_one_shot():
    g = torch.Generator().manual_seed(4)
    truth = torch.randn(10, 6, 3, generator=g, dtype=torch.float64)
    pred = truth + 0.5 * torch.randn(2, 10, 6, 3, generator=g, dtype=torch.float64)
    accumulator = R2Accumulator(truth)
    for idx in torch.arange(10).split(4):
        accumulator.add(pred[:, idx], truth[idx])
    torch.testing.assert_close(accumulator.value(), r2_score(pred, truth))
