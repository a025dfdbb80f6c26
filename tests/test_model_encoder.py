"""model/encoder.py: the controller inputs' lag and zero padding, the initial-condition posterior's
variance floor and linear map, checked against the spec (/work/shared/reference/lfads-model-spec.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autolfads.model import MemberRNG
from autolfads.model.encoder import Encoder
from helpers import member, model_config

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
