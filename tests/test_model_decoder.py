"""model/decoder.py: the generator and controller loop against a hand-unrolled spec, the factor readout's
unit-norm rows, the generator's undropped state in training, and the controller switched off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autolfads.model import LFADS
from helpers import member, model_config, numpy_gru_step, randomize_

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
