"""model/augmentations.py: coordinated dropout, gradient blocking, the sample-validation mask, SBTT,
spike jitter and temporal shift (issue 8, part 4), and a population trained with augmentations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autolfads.errors import ConfigError
from autolfads.model import MemberRNG
from autolfads.model.augmentations import (
    block_gradients,
    coordinated_dropout,
    pad_to,
    sample_validation_mask,
    sbtt_targets,
    spike_jitter,
    temporal_shift,
)
from autolfads.model.reconstruction import (
    make_reconstruction,
)
from autolfads.train.objective import reconstruction_loss
from autolfads.train.trainer import Trainer
from helpers import (
    config,
    gamma_data,
    make_data,
    model_config,
)

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


def test_sample_validation_mask_fixed_under_seed():
    shape, rate = (30, 12, 8), 0.25
    first = sample_validation_mask(shape, rate, seed=3, start_bin=2)
    assert torch.equal(first, sample_validation_mask(shape, rate, seed=3, start_bin=2))
    assert not torch.equal(first, sample_validation_mask(shape, rate, seed=4, start_bin=2))
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert torch.all(first[:, :2] == 1)
    held_back = (first[:, 2:] == 0).float().mean().item()
    assert abs(held_back - rate) < 4 * math.sqrt(rate * (1 - rate) / (30 * 10 * 8))


# ============================================================================ SBTT


def test_sbtt_mask_is_a_no_op_without_missing_bins_and_reweights_with_them():
    rng = np.random.default_rng(2)
    params = torch.from_numpy(rng.normal(size=(2, 3, 5, 4, 1)))
    target = torch.from_numpy(rng.poisson(2.0, size=(3, 5, 4)).astype(np.float64))
    recon = make_reconstruction(model_config())
    full = reconstruction_loss(recon.nll(params, target))
    filled, weight = sbtt_targets(target)
    assert weight is None and filled is target
    missing = target.clone()
    missing[0, 1, 2] = missing[2, 4, 0] = missing[1, 0, 3] = float("nan")
    filled, weight = sbtt_targets(missing)
    assert not torch.isnan(filled).any()
    masked = reconstruction_loss(recon.nll(params, filled) * weight)
    observed = ~torch.isnan(missing)
    nll = recon.nll(params, target)
    by_hand = (nll * observed).sum((1, 2, 3)) / observed.sum()
    torch.testing.assert_close(masked, by_hand)
    fraction_missing = 3 / missing.numel()
    torch.testing.assert_close(masked, (nll * observed).mean((1, 2, 3)) / (1 - fraction_missing))
    assert not torch.allclose(masked, full)


def test_sbtt_training_ignores_missing_bins():
    cfg = config(model=dict(dropout_rate=0.05, cd_rate=0.2), train=dict(lr_init=1e-2, sbtt=True))
    data = make_data(cfg.model, n_train=32, n_valid=8, seed=3, learnable=True)
    holes = torch.rand(data.train.recon.shape, generator=torch.Generator().manual_seed(0)) < 0.2
    data.train.recon[holes] = float("nan")
    data.train.encod.copy_(torch.nan_to_num(data.train.recon[:, : cfg.model.encod_seq_len, : cfg.model.encod_dim]))
    trainer = Trainer(cfg, data, member_seeds=[0])
    params = [p.detach().clone() for p in trainer.params]
    history = [trainer.run_epoch() for _ in range(8)]
    assert all(torch.isfinite(row["loss"]).all() and torch.isfinite(row["val_loss"]).all() for row in history)
    assert all(torch.isfinite(p).all() for p in trainer.params)
    assert any(not torch.equal(a, b) for a, b in zip(params, trainer.params))
    assert history[-1]["val_nll_heldin"].item() < history[0]["val_nll_heldin"].item()
    assert torch.isfinite(history[-1]["val_bps"]).all()  # bits/spike over the observed bins only
    metrics = trainer.evaluate("train")
    assert torch.isfinite(metrics["train_bps"]).all() and torch.isfinite(metrics["train_recon"]).all()


# ============================================================================ temporal shift and spike jitter


def counts(seed=0, shape=(4, 10, 3)):
    return torch.from_numpy(np.random.default_rng(seed).poisson(1.5, size=shape).astype(np.float32))


def test_spike_jitter_preserves_counts_and_is_seeded_and_member_independent():
    data = counts()
    jittered = spike_jitter(data, 2, MemberRNG([5, 6]))
    assert jittered.shape == (2, *data.shape)
    torch.testing.assert_close(jittered.sum(2), data.sum(1).expand(2, -1, -1))  # per trial and neuron
    assert not torch.equal(jittered[0], data) and not torch.equal(jittered[0], jittered[1])
    torch.testing.assert_close(spike_jitter(data, 2, MemberRNG([5, 6])), jittered)  # deterministic under a seed
    torch.testing.assert_close(spike_jitter(data, 2, MemberRNG([6]))[0], jittered[1])  # member-independent
    torch.testing.assert_close(spike_jitter(data, 0, MemberRNG([5]))[0], data)
    assert (jittered - data).abs().max() > 0 and (jittered >= 0).all()


def test_spike_jitter_moves_spikes_at_most_width_bins():
    data = torch.zeros(1, 20, 1)
    data[0, 10, 0] = 50
    out = spike_jitter(data, 2, MemberRNG([0]))[0, 0, :, 0]
    assert out.sum() == 50 and out[:8].sum() == 0 and out[13:].sum() == 0 and (out[8:13] > 0).sum() >= 3


def test_temporal_shift_keeps_shapes_and_shifts_each_trial_neuron():
    data = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(2, 8, 3)
    shifted = temporal_shift(data, 2.0, 2, MemberRNG([1, 2]))
    assert shifted.shape == (2, *data.shape)
    for p in range(2):
        for b in range(2):
            for n in range(3):
                series, original = shifted[p, b, :, n], data[b, :, n]
                candidates = [
                    torch.cat([original[:1].repeat(s), original[: 8 - s]])
                    if s >= 0
                    else torch.cat([original[-s:], original[-1:].repeat(-s)])
                    for s in range(-2, 3)
                ]
                assert any(torch.equal(series, c) for c in candidates)
    torch.testing.assert_close(temporal_shift(data, 2.0, 2, MemberRNG([1, 2])), shifted)
    torch.testing.assert_close(temporal_shift(data, 2.0, 2, MemberRNG([2]))[0], shifted[1])
    assert not torch.equal(shifted[0], shifted[1])
    torch.testing.assert_close(temporal_shift(data, 0.0, 2, MemberRNG([1]))[0], data)


def test_trainer_with_augmentations_runs_and_members_stay_independent():
    model = dict(temporal_shift_std=1.0, temporal_shift_max=2, spike_jitter_width=1, dropout_rate=0.05, cd_rate=0.2)
    cfg = config(model=model, train=dict(lr_init=1e-2))
    data = make_data(cfg.model, n_train=24, n_valid=8, seed=3, learnable=True)
    pop = Trainer(cfg, data, population=[{}, {"lr_init": 3e-3}], member_seeds=[0, 1])
    single = Trainer(cfg, data, population=[{"lr_init": 3e-3}], member_seeds=[1])
    for _ in range(2):
        pop.run_epoch()
        single.run_epoch()
    for (name, a), b in zip(pop.model.state_dict().items(), single.model.state_dict().values()):
        torch.testing.assert_close(a[1:], b, rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(ConfigError, match="spike counts"):
        Trainer(
            config(model=dict(reconstruction="gamma", spike_jitter_width=1)),
            gamma_data(model_config(reconstruction="gamma")),
        )
