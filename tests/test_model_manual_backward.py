"""model/manual_backward.py: the manual recurrent core (hand-written backward) against the reference equations
(model/reference.py) under autograd: same values, same gradients."""

import pytest
import torch

from autolfads.config import ModelConfig
from autolfads.model import LFADS
from autolfads.model.decoder_inputs import FLAT_ORDER, DecoderInputs
from autolfads.model.manual_backward import ManualDecoder, ManualGRUSequence
from autolfads.model.reference import decode, gru_sequence
from autolfads.train.trainer import Trainer
from helpers import config, make_data


def grads_of(function, inputs, weights):
    """Value of `function(*inputs)` and the gradients of a fixed random projection of its outputs."""
    for t in inputs:
        if isinstance(t, torch.Tensor) and t.requires_grad:
            t.grad = None
    outputs = function(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    loss = sum((out * w).sum() for out, w in zip(outputs, weights))
    loss.backward()
    return [out.detach() for out in outputs], [
        t.grad.clone() if isinstance(t, torch.Tensor) and t.grad is not None else None for t in inputs
    ]


def assert_close_grads(a, b, rtol=1e-5):
    for x, y in zip(a, b):
        if x is None or y is None:  # one side leaves an unused input without a gradient, the other gives zeros
            assert all(g is None or not g.abs().any() for g in (x, y))
            continue
        if x.numel() == 0:  # gen_w_co without a controller
            assert y.shape == x.shape
            continue
        scale = max(float(x.abs().max()), 1e-6)
        assert float((x - y).abs().max()) <= rtol * scale


@pytest.mark.parametrize("clip", [5.0, 0.6])
def test_fused_gru_sequence_matches_autograd(clip):
    generator = torch.Generator().manual_seed(0)
    steps, groups, batch, hidden = 9, 3, 4, 5
    x_proj = (torch.randn(groups, steps, batch, 3 * hidden, generator=generator) * 2).requires_grad_()
    h0 = torch.randn(groups, 1, hidden, generator=generator).requires_grad_()
    w_zr = torch.randn(groups, hidden, 2 * hidden, generator=generator).requires_grad_()
    w_n = torch.randn(groups, hidden, hidden, generator=generator).requires_grad_()
    weights = [torch.randn(groups, steps, batch, hidden, generator=generator)]
    inputs = [x_proj, h0, w_zr, w_n]
    eager_out, eager_grads = grads_of(
        lambda x, h, a, b: gru_sequence(x, h.expand(groups, batch, hidden), a, b, clip), inputs, weights
    )
    fused_out, fused_grads = grads_of(
        lambda x, h, a, b: ManualGRUSequence.apply(x, h.expand(groups, batch, hidden), a, b, clip), inputs, weights
    )
    # the same arithmetic but for the fast core's CPU tanh (2 sigmoid(2x) - 1)
    torch.testing.assert_close(eager_out[0], fused_out[0], rtol=0, atol=1e-6)
    if clip < 1:
        assert (eager_out[0].abs() == clip).float().mean() > 0.1  # the clamp is really exercised
    assert_close_grads(eager_grads, fused_grads)


def decoder_inputs(use_con: bool, training: bool):
    """DecoderInputs.flat() (masks and noise when training) and random weights of the loop's six outputs."""
    generator = torch.Generator().manual_seed(1)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator) * scale).requires_grad_()

    steps, members, batch, gen, con, fac, co = 7, 2, 3, 6, 5, 4, 2
    co_dim = co if use_con else 0
    inputs = [
        rand(members, batch, gen),  # gen_init
        rand(members, batch, fac),  # factor0
        rand(members, batch, con) if use_con else None,  # con_h0
        rand(members, steps, batch, 3 * con) if use_con else None,  # con_in_proj
        rand(members, steps, batch, 3 * gen),  # gen_in_proj
        rand(members, fac, 3 * con, scale=0.5) if use_con else None,  # con_w_fac
        rand(members, con, 2 * con, scale=0.5) if use_con else None,  # con_zr
        rand(members, con, con, scale=0.5) if use_con else None,  # con_n
        rand(members, con, 2 * co, scale=0.5) if use_con else None,  # co_w
        rand(members, 2 * co) if use_con else None,  # co_b
        rand(members, co_dim, 3 * gen, scale=0.5),  # gen_w_co
        rand(members, gen, 2 * gen, scale=0.5),  # gen_zr
        rand(members, gen, gen, scale=0.5),  # gen_n
        rand(members, gen, fac, scale=0.5),  # factor_w
        (torch.rand(members, steps, batch, fac, generator=generator) > 0.3).float() / 0.7
        if training and use_con
        else None,
        (torch.rand(members, steps, batch, gen, generator=generator) > 0.3).float() / 0.7 if training else None,
        torch.randn(members, steps, batch, co, generator=generator) if training and use_con else None,
        0.9,  # a tight clip, so clamping happens
    ]
    dims = (gen, fac, con if use_con else 0, co_dim, co_dim, co_dim)
    return inputs, [torch.randn(members, steps, batch, d, generator=generator) for d in dims]


@pytest.mark.parametrize("use_con", [True, False])
def test_decoder_inputs_flatten_in_the_functions_argument_order_and_back(use_con):
    flat = tuple(decoder_inputs(use_con, training=True)[0])
    inputs = DecoderInputs.from_flat(flat)
    assert (inputs.con is not None) == use_con and inputs.clip == 0.9
    assert all(a is b for a, b in zip(inputs.flat(), flat, strict=True))
    assert inputs.gen.gen_in_proj is flat[FLAT_ORDER.index("gen_in_proj")]
    if use_con:
        assert inputs.con.co_noise is flat[FLAT_ORDER.index("co_noise")] is not None


@pytest.mark.parametrize("use_con", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_fused_decoder_matches_autograd(use_con, training):
    inputs, weights = decoder_inputs(use_con, training)
    eager_out, eager_grads = grads_of(lambda *flat: decode(DecoderInputs.from_flat(flat)), inputs, weights)
    fused_out, fused_grads = grads_of(lambda *flat: ManualDecoder.apply(*flat, False), inputs, weights)
    for a, b in zip(eager_out, fused_out):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert_close_grads(eager_grads, fused_grads)


@pytest.mark.parametrize("co_dim,ext", [(2, 3), (0, 0)])
def test_lfads_loss_and_gradients_fused_vs_eager(co_dim, ext):
    cfg = ModelConfig(
        data_dim=8,
        cs_dim=2,
        seq_len=10,
        fp_len=2,
        ext_input_dim=ext,
        co_dim=co_dim,
        ic_enc_dim=5,
        ci_enc_dim=4,
        con_dim=4,
        ic_dim=3,
        gen_dim=6,
        fac_dim=3,
        cell_clip=1.0,
    )
    generator = torch.Generator().manual_seed(2)
    data = torch.poisson(torch.full((4, 8, 6), 1.5), generator=generator)
    target = torch.poisson(torch.full((4, 10, 8), 1.5), generator=generator)
    ext_input = torch.randn(4, 10, ext, generator=generator) if ext else None
    results = []
    for fused in (False, True):
        model = LFADS(cfg, [3, 4], core="manual" if fused else "autograd").train()
        out = model(data, torch.tensor([0.1, 0.2]), ext_input)
        loss = model.reconstruction.nll(out.output_params, target).mean() + 1e-3 * (out.kl_ic + out.kl_co).sum()
        loss.backward()
        results.append((loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}))
    (eager_loss, eager_grads), (fused_loss, fused_grads) = results
    torch.testing.assert_close(eager_loss, fused_loss, rtol=1e-6, atol=0)  # the CPU tanh of the fast core
    assert eager_grads.keys() <= fused_grads.keys()
    assert_close_grads([eager_grads[k] for k in eager_grads], [fused_grads[k] for k in eager_grads])


def test_training_with_the_fast_core_follows_the_eager_run():
    cfg = config()
    runs = []
    for fused in (False, True):
        core = "auto" if fused else "autograd"  # auto: cpp where it builds
        fast = cfg.model_copy(update={"train": cfg.train.model_copy(update={"recurrent_core": core})})
        trainer = Trainer(fast, make_data(fast.model), member_seeds=[0])
        for _ in range(3):
            trainer.run_epoch()
        runs.append(trainer)
    for (name, a), b in zip(runs[0].model.named_parameters(), runs[1].model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
