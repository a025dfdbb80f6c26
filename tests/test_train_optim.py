"""train/optim.py: PopulationAdam against torch's Adam and TensorFlow's epsilon-hat, per-member learning
rates, inactive members, its state round trip, and per-member gradient-norm clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autolfads.train.optim import PopulationAdam, clip_member_grad_norms

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
