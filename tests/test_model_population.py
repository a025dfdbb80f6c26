"""model/population.py: the population axis. PopulationLinear, member dropout, and each member of a
population equal to a single model (initial weights, forward, backward)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autolfads.model import LFADS, MemberRNG
from autolfads.model.population import PopulationLinear, member_dropout
from helpers import member, model_config, randomize_


def test_population_linear_init_and_forward():
    layer = PopulationLinear(MemberRNG([0, 1]), 400, 300)
    assert layer.weight.shape == (2, 400, 300) and torch.equal(layer.bias, torch.zeros(2, 300))
    assert layer.weight[0].std().item() == pytest.approx(400**-0.5, rel=0.02)
    randomize_(layer, 1)
    x = torch.randn(2, 3, 5, 400)
    want = np.einsum("btj,jk->btk", member(x, 1), member(layer.weight, 1)) + member(layer.bias, 1)
    np.testing.assert_allclose(layer(x)[1].detach().numpy(), want, atol=1e-4)


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


def test_member_dropout_scales_kept_entries():
    rng = MemberRNG([0, 1])
    x = torch.ones(1, 200, 50)
    out = member_dropout(x, torch.tensor([0.0, 0.4]), rng, training=True)
    assert torch.equal(out[0], torch.ones(200, 50))
    kept = out[1][out[1] != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.6))
    assert (out[1] == 0).float().mean().item() == pytest.approx(0.4, abs=0.02)
    assert torch.equal(member_dropout(x, torch.tensor([0.5, 0.5]), rng, training=False), x)
