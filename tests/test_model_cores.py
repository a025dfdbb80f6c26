"""model/cores.py: which recurrent core train.recurrent_core picks, and that each dispatcher runs the core it is
given (the same values and gradients from every core; the C++ loops called only by cpp)."""

import pytest
import torch

from autolfads.errors import ConfigError
from autolfads.model import cores, cpp_loops, manual_backward
from autolfads.model.decoder_inputs import DecoderInputs
from helpers import config
from test_model_manual_backward import assert_close_grads, decoder_inputs, grads_of

BUILDS = cpp_loops.build_tools_missing() is None
CORES = ["autograd", "manual"] + (["cpp"] if BUILDS else [])


def test_auto_on_a_gpu_or_with_plain_autograd_takes_no_cpp_loops():
    train = config().train
    core, note = cores.pick_core(train.recurrent_core, torch.device("cuda"))  # decided without touching a GPU
    assert core == "manual" and note.endswith("they run on a CPU and this run is on cuda")
    for chosen in ("autograd", "manual"):
        assert cores.pick_core(chosen, torch.device("cpu")) == (chosen, None)
    with pytest.raises(ConfigError, match="train.recurrent_core cpp runs on a CPU; on cuda use manual"):
        cores.pick_core("cpp", torch.device("cuda"))


@pytest.fixture
def cpp_calls(monkeypatch):
    """The names of the C++ functions the manual core calls, in order."""
    calls = []

    class Recorder:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(cpp_loops.cpp_extension(), name)

    monkeypatch.setattr(manual_backward, "cpp_extension", Recorder)
    return calls


def run_every_dispatcher(core):
    """Outputs and input gradients of the three dispatchers on fixed random inputs, on `core`."""
    generator = torch.Generator().manual_seed(3)
    bias, x, weight = (
        torch.randn(*shape, generator=generator).requires_grad_() for shape in ((2, 1, 6), (2, 5, 4), (2, 4, 6))
    )
    projection = grads_of(
        lambda b, a, w: cores.project(b, a, w, core), [bias, x, weight], [torch.randn(2, 5, 6, generator=generator)]
    )
    groups, steps, batch, hidden = 2, 6, 3, 4
    gru_inputs = [
        torch.randn(*shape, generator=generator).requires_grad_()
        for shape in (
            (groups, steps, batch, 3 * hidden),
            (groups, batch, hidden),
            (groups, hidden, 2 * hidden),
            (groups, hidden, hidden),
        )
    ]
    sequence = grads_of(
        lambda *t: cores.gru_sequence(*t, 0.8, core),
        gru_inputs,
        [torch.randn(groups, steps, batch, hidden, generator=generator)],
    )
    inputs, weights = decoder_inputs(use_con=True, training=True)
    decoded = grads_of(lambda *flat: cores.decode(DecoderInputs.from_flat(flat), core), inputs, weights)
    return projection, sequence, decoded  # fmt: skip


@pytest.mark.parametrize("core", CORES)
def test_every_core_gives_the_references_values_and_gradients_and_only_cpp_calls_the_cpp_loops(core, cpp_calls):
    reference = run_every_dispatcher("autograd")
    assert cpp_calls == []
    for (want, want_grads), (got, got_grads) in zip(reference, run_every_dispatcher(core), strict=True):
        for a, b in zip(want, got, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert_close_grads(want_grads, got_grads)
    expected = {"autograd": set(), "manual": set(), "cpp": {"project", "gru_forward", "gru_backward",
                                                            "decoder_forward", "decoder_backward"}}  # fmt: skip
    assert set(cpp_calls) == expected[core]
