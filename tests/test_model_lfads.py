"""model/lfads.py: the whole LFADS model. Output shapes, external inputs, eval vs sampling, dropout in
training mode, and the L2 penalty worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autolfads.model import LFADS
from autolfads.model.reconstruction import RECONSTRUCTIONS
from helpers import member, model_config


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
