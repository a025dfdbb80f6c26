"""model/cpp_loops.py: the C++ loops (`train.recurrent_core cpp`) against the python loops of the manual core:
same buffers, same steps, so the same values and gradients to float rounding; their projection kernel against
baddbmm; the build; and the option's errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autolfads.config import ModelConfig, parse_config
from autolfads.errors import ConfigError
from autolfads.model import LFADS, cpp_loops
from autolfads.model.cores import project
from autolfads.model.manual_backward import ManualDecoder, ManualGRUSequence
from autolfads.train.trainer import Trainer
from helpers import config, make_data
from test_model_manual_backward import assert_close_grads, decoder_inputs, grads_of

needs_compiler = pytest.mark.skipif(
    cpp_loops.build_tools_missing() is not None, reason=str(cpp_loops.build_tools_missing())
)


@needs_compiler
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
@pytest.mark.parametrize("clip", [5.0, 0.6])
def test_compiled_gru_sequence_matches_the_python_loop(clip, dtype, tolerance):
    generator = torch.Generator().manual_seed(0)
    steps, groups, batch, hidden = 9, 3, 4, 5

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator) * scale).to(dtype).requires_grad_()

    inputs = [rand(groups, steps, batch, 3 * hidden, scale=2), rand(groups, 1, hidden)]
    inputs += [rand(groups, hidden, 2 * hidden), rand(groups, hidden, hidden)]
    weights = [torch.randn(groups, steps, batch, hidden, generator=generator).to(dtype)]
    runs = [
        grads_of(
            lambda x, h, a, b, c=c: ManualGRUSequence.apply(x, h.expand(groups, batch, hidden), a, b, clip, c),
            inputs,
            weights,
        )
        for c in (False, True)
    ]
    (python_out, python_grads), (compiled_out, compiled_grads) = runs
    assert compiled_out[0].dtype == dtype
    torch.testing.assert_close(python_out[0], compiled_out[0], rtol=0, atol=tolerance)
    if clip < 1:
        assert (compiled_out[0].abs() == clip).float().mean() > 0.1  # the clamp is really exercised
    assert_close_grads(python_grads, compiled_grads, rtol=10 * tolerance)


@needs_compiler
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("rows,n_in,n_out", [(13, 7, 37), (64, 100, 300), (3, 1, 4)])
def test_the_compiled_projection_matches_baddbmm(rows, n_in, n_out, dtype, tolerance):
    """Rows not a multiple of the kernel's tile, outputs not of its vectors (partial last vector), K of 1."""
    generator = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=generator).to(dtype).requires_grad_()

    inputs = [rand(2, 1, n_out), rand(2, rows, n_in), rand(2, n_in, n_out)]
    weights = [torch.randn(2, rows, n_out, generator=generator).to(dtype)]
    expected_out, expected_grads = grads_of(lambda *x: project(*x, "manual"), inputs, weights)
    out, grads = grads_of(lambda *x: project(*x, "cpp"), inputs, weights)
    torch.testing.assert_close(out[0], expected_out[0], rtol=tolerance, atol=tolerance)
    assert_close_grads(expected_grads, grads, rtol=tolerance)


@needs_compiler
@pytest.mark.parametrize("use_con", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_cpp_decoder_matches_the_python_loop(use_con, training):
    inputs, weights = decoder_inputs(use_con, training)
    python_out, python_grads = grads_of(lambda *x: ManualDecoder.apply(*x, False), inputs, weights)
    compiled_out, compiled_grads = grads_of(lambda *x: ManualDecoder.apply(*x, True), inputs, weights)
    for a, b in zip(python_out, compiled_out):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert_close_grads(python_grads, compiled_grads)
    assert sum(g is not None for g in compiled_grads) == sum(g is not None for g in python_grads)


@needs_compiler
def test_the_decoder_loop_reads_its_tensors_by_name_and_names_a_missing_one():
    """The C++ loop takes each side as a dict of named tensors: a side without one is a clear error naming it,
    not a read of another tensor's place."""
    shapes = {"trajectory": (1, 3, 1, 1), "zr_gates": (1, 2, 1, 2), "n_gates": (1, 2, 1, 1), "in_proj": (1, 2, 1, 3),
              "zr": (1, 1, 2), "n": (1, 1, 1)}  # fmt: skip
    side = {name: torch.zeros(shape) for name, shape in shapes.items()}
    with pytest.raises(ValueError, match="the decoder loop's C\\+\\+ side has no tensor 'factor_w'"):
        cpp_loops.cpp_extension().decoder_forward(side, torch.zeros(1, 2, 1, 1), None, None, None, None, 1.0)


@needs_compiler
def test_lfads_loss_and_gradients_compiled_vs_python_loops():
    cfg = ModelConfig(data_dim=8, cs_dim=2, seq_len=10, fp_len=2, ext_input_dim=2, co_dim=2, ic_enc_dim=5)
    cfg = cfg.model_copy(update=dict(ci_enc_dim=4, con_dim=4, ic_dim=3, gen_dim=6, fac_dim=3, cell_clip=1.0))
    generator = torch.Generator().manual_seed(2)
    data = torch.poisson(torch.full((4, 8, 6), 1.5), generator=generator)
    target = torch.poisson(torch.full((4, 10, 8), 1.5), generator=generator)
    ext_input = torch.randn(4, 10, 2, generator=generator)
    results = []
    for core in ("manual", "cpp"):
        model = LFADS(cfg, [3, 4], core=core).train()
        out = model(data, torch.tensor([0.1, 0.2]), ext_input)
        loss = model.reconstruction.nll(out.output_params, target).mean() + 1e-3 * (out.kl_ic + out.kl_co).sum()
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters()]))
    (python_loss, python_grads), (compiled_loss, compiled_grads) = results
    torch.testing.assert_close(python_loss, compiled_loss, rtol=1e-6, atol=0)
    assert_close_grads(python_grads, compiled_grads)


@needs_compiler
def test_training_with_compiled_loops_follows_the_python_loops():
    cfg = config()
    runs = []
    for core in ("manual", "cpp"):
        train = cfg.train.model_copy(update={"recurrent_core": core})
        trainer = Trainer(cfg.model_copy(update={"train": train}), make_data(cfg.model), member_seeds=[0])
        assert trainer.model.decoder.core == core
        for _ in range(3):
            trainer.run_epoch()
        runs.append(trainer)
    for (name, a), b in zip(runs[0].model.named_parameters(), runs[1].model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert runs[0].history[-1].keys() == runs[1].history[-1].keys()


@pytest.mark.parametrize(
    "old, core",
    [
        ({"fused_rnn": False}, "autograd"),
        ({"fused_rnn": "false", "compiled_loops": "auto"}, "autograd"),
        ({"fused_rnn": True}, "auto"),
        ({"compiled_loops": "auto"}, "auto"),
        ({"compiled_loops": True}, "cpp"),
        ({"fused_rnn": True, "compiled_loops": False}, "manual"),
        ({"compiled_loops": False, "recurrent_core": "manual"}, "manual"),
    ],
)
def test_the_older_core_keys_are_read_as_recurrent_core_with_a_line_saying_so(old, core):
    with pytest.warns(FutureWarning, match=rf"read as train.recurrent_core {core} \(the older keys' replacement\)"):
        config = parse_config({"train": old})[0]
    assert config.train.recurrent_core == core and "fused_rnn" not in config.to_dict()["train"]


@pytest.mark.parametrize(
    "old, message",
    [
        ({"compiled_loops": True, "fused_rnn": False}, "train.compiled_loops true needs train.fused_rnn true"),
        ({"compiled_loops": False, "recurrent_core": "cpp"}, "means train.recurrent_core manual, but .* is cpp"),
        ({"fused_rnn": "sometimes"}, "expected true or false"),
    ],
)
def test_older_core_keys_that_contradict_are_refused(old, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"train": old})


def test_compiled_loops_without_a_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    cpp_loops.cpp_extension.cache_clear()
    try:
        with pytest.raises(
            ConfigError, match="'no-such-c\\+\\+-compiler' is not on PATH; .* or set train.recurrent_core manual"
        ):
            cpp_loops.cpp_extension()
    finally:
        cpp_loops.cpp_extension.cache_clear()


@pytest.fixture
def no_compiler(monkeypatch):
    """This process sees no C++ compiler: the compiled loops cannot be built (nor loaded) here."""
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    for cached in (cpp_loops.cpp_extension, cpp_loops.why_not_cpp):
        cached.cache_clear()
    yield
    for cached in (cpp_loops.cpp_extension, cpp_loops.why_not_cpp):
        cached.cache_clear()


def test_auto_without_a_compiler_takes_the_python_loops_and_says_why(no_compiler):
    cfg = config()
    assert cfg.train.recurrent_core == "auto"  # the default
    trainer = Trainer(cfg, make_data(cfg.model), member_seeds=[0])
    assert trainer.core == trainer.model.decoder.core == "manual"
    assert trainer.core_note == (
        "recurrent core: manual (python loops), not cpp (train.recurrent_core auto): the C++ compiler "
        "'no-such-c++-compiler' is not on PATH"
    )


@needs_compiler
def test_auto_takes_the_compiled_loops_where_they_build():
    cfg = config()
    trainer = Trainer(cfg, make_data(cfg.model), member_seeds=[0])
    assert (trainer.core, trainer.model.decoder.core, trainer.core_note) == ("cpp", "cpp", None)


@pytest.mark.slow
def test_the_command_line_says_in_one_line_why_it_trains_without_compiled_loops(
    autolfads, tiny_model, lorenz_file, tmp_path, monkeypatch
):
    folder = tmp_path / "run"
    monkeypatch.setenv("CXX", "no-such-c++-compiler")  # the command's environment
    args = ("train", "--data", lorenz_file, "--checkpoint", folder, "--quiet", "--no-output", "--no-report")
    result = autolfads(*args, *tiny_model(train__max_epochs=1))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "recurrent core: manual (python loops)" in line]
    assert len(lines) == 1 and lines[0].endswith("the C++ compiler 'no-such-c++-compiler' is not on PATH")
    assert "recurrent core manual" in (folder / "train.log").read_text()


@pytest.mark.skipif(not cpp_loops.NATIVE, reason="the build is tuned to the CPU (-march=native) on Linux only")
def test_a_build_tuned_to_the_cpu_is_kept_per_kind_of_cpu_and_checkout(monkeypatch, tmp_path):
    """Machines that share a home directory (and so the extension cache) never load another CPU's build, and
    two checkouts sharing the cache do not rebuild over each other's build."""
    name = cpp_loops.build_name()
    assert name.startswith("autolfads_loops_") and name == cpp_loops.build_name()
    other_checkout = tmp_path / "loops.cpp"
    other_checkout.write_bytes(cpp_loops.SOURCE.read_bytes())
    with monkeypatch.context() as patch:
        patch.setattr(cpp_loops, "SOURCE", other_checkout)
        assert cpp_loops.build_name() != name
    monkeypatch.setattr(cpp_loops.platform, "machine", lambda: "another-cpu")
    assert cpp_loops.build_name() != name


@needs_compiler
@pytest.mark.slow
def test_the_command_line_trains_and_resumes_with_compiled_loops(autolfads, tiny_model, lorenz_file, tmp_path):
    folder = tmp_path / "run"
    args = ("train", "--data", lorenz_file, "--checkpoint", folder)
    first = autolfads(*args, *tiny_model(train__max_epochs=2, train__recurrent_core="cpp"))
    assert first.returncode == 0, first.stderr
    assert "recurrent core cpp" in (folder / "train.log").read_text()
    resumed = autolfads(*args, *tiny_model(train__max_epochs=3, train__recurrent_core="cpp"))
    assert resumed.returncode == 0, resumed.stderr
    metrics = (folder / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + 3  # a header, then epochs 1-3: the resumed run added one


@needs_compiler
@pytest.mark.slow
def test_processes_that_build_at_once_share_one_build_past_a_killed_builders_lock(tmp_path, monkeypatch):
    """Search workers start together: the first builds, the others wait and load the same. A builder killed
    half-way left torch's lock file behind: nobody waits on it for ever."""
    code = "from autolfads.model.cpp_loops import cpp_extension; print(cpp_extension().__file__)"
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions")}
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", env["TORCH_EXTENSIONS_DIR"])
    folder = cpp_loops.build_directory(cpp_loops.build_name())
    folder.mkdir(parents=True)
    (folder / "lock").touch()  # what `kill -9` of a build leaves
    builds = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [build.communicate(timeout=600) for build in builds]
    assert [build.returncode for build in builds] == [0, 0], [err for _, err in outputs]
    paths = {out.strip() for out, _ in outputs}
    assert len(paths) == 1 and Path(paths.pop()).parent == folder
