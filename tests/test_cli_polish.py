"""The friendly command line: help texts with examples, --version, `config show|init` (both schemas, and an
initialised config trains), `doctor`."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytest
import yaml

from autolfads import __version__
from autolfads.cli import build_parser, main
from autolfads.config import TF2_CONVENTIONS, Config, load_config, parse_config
from autolfads.config_template import default_config_text
from autolfads.model.compiled import build_tools_missing


def defaults(tf2: bool) -> Config:
    """Our defaults; in lfads-tf2's spelling with lfads-tf2's conventions where we offer a choice."""
    data = Config().to_dict()
    for key, value in TF2_CONVENTIONS.items() if tf2 else ():
        section, field = key.split(".")
        data[section][field] = value
    return Config.model_validate(data)


def subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every (sub)command parser under `parser`, by its command path."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[path + (name,)] = sub
                found.update(subcommands(sub, path + (name,)))
    return found


def test_top_level_help_lists_every_command_with_examples(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    for command in ("train", "search", "sample", "data", "report", "config", "doctor"):
        assert f"\n    {command}" in out and f"autolfads {command}" in out, command


# The commands of the local workflow; a new command adds itself here with an example in its help.
COMMANDS = [
    ("train",),
    ("search",),
    ("sample",),
    ("data",),
    ("data", "lorenz"),
    ("data", "chaotic-rnn"),
    ("report",),
    ("config",),
    ("config", "show"),
    ("config", "init"),
    ("doctor",),
]


def test_every_subcommand_help_has_an_example():
    commands = subcommands(build_parser())
    for path in COMMANDS:
        text = commands[path].format_help()
        assert "example" in text and "autolfads " + path[0] in text, (
            f"`autolfads {' '.join(path)} --help` shows no example"
        )


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"autolfads {__version__}"


@pytest.mark.parametrize("tf2", [False, True])
def test_config_show_prints_the_documented_defaults(tf2, capsys):
    assert main(["config", "show", *(["--tf2"] if tf2 else [])]) == 0
    text = capsys.readouterr().out
    assert text == default_config_text(tf2)
    config, ignored = parse_config(yaml.safe_load(text))
    assert config == defaults(tf2) and ignored == []  # exactly our defaults, in either spelling, nothing skipped
    assert config != Config() if tf2 else True  # the conventions are a real difference
    body = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    leaves = [line for line in body if not line.rstrip().endswith(":")]
    assert all(" # " in line for line in leaves), "every key is documented"
    assert (
        ("MODEL:" in body and "TRAIN:" in body and "  LR:" in body)
        if tf2
        else ("model:  # Model architecture and regularisers." in body)
    )


def test_config_init_writes_and_never_overwrites_by_accident(tmp_path, capsys):
    path = tmp_path / "my.yaml"
    assert main(["config", "init", str(path), "--tf2"]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "ignored lfads-tf2 keys" warning either
        assert load_config(path) == defaults(tf2=True)
    path.write_text("# mine\n")
    assert main(["config", "init", str(path)]) == 2
    assert "exists" in capsys.readouterr().err and path.read_text() == "# mine\n"
    assert main(["config", "init", str(path), "--force"]) == 0 and load_config(path) == defaults(tf2=False)
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(SystemExit) as exit:
        main(["config"])  # an action is required
    assert exit.value.code == 2


def test_doctor_reports_versions_devices_ray_and_threads(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for item in (
        "python",
        "torch",
        "numpy",
        "ray",
        "torch devices",
        "CUDA available",
        "Ray",
        "recurrent core",
        "torch threads",
        "OMP_NUM_THREADS",
        "recommended",
    ):
        assert any(line.startswith(item + " ") for line in out.splitlines()), item
    assert "cpu" in out and "train.threads 1" in out


def test_doctor_says_the_python_loops_are_used_and_why_not_the_compiled_ones(capsys, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    assert main(["doctor"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("recurrent core "))
    assert line.endswith(
        "manual (python loops; train.recurrent_core auto): cpp cannot be built here: the C++ compiler "
        "'no-such-c++-compiler' is not on PATH"
    )


@pytest.mark.skipif(build_tools_missing() is not None, reason=str(build_tools_missing()))
def test_doctor_says_the_compiled_loops_are_used_where_they_can_be_built(capsys):
    assert main(["doctor"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("recurrent core "))
    assert "cpp (C++ loops; train.recurrent_core auto)" in line


@pytest.mark.slow
@pytest.mark.parametrize("tf2", [False, True])
def test_config_init_round_trips_through_train(tf2, autolfads, lorenz_file, tiny_model, tmp_path):
    path = tmp_path / "config.yaml"
    result = autolfads("config", "init", path, *(["--tf2"] if tf2 else []))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "run"
    result = autolfads(
        "train",
        "--data",
        lorenz_file,
        "--checkpoint",
        folder,
        "--config-file",
        path,
        "--quiet",
        "--no-report",
        *tiny_model(),
    )
    assert result.returncode == 0, result.stderr
    assert "ignored" not in result.stderr
    trained = load_config(folder / "config.yaml")
    assert (trained.model.data_dim, trained.model.seq_len, trained.model.gen_dim) == (10, 20, 16)
    assert trained.train.lr_schedule is False and trained.train.adam_epsilon == Config().train.adam_epsilon
    assert trained.train.adam_epsilon_hat is tf2


@pytest.mark.slow
def test_installed_command_help_and_doctor(autolfads):
    result = autolfads("--help")
    assert result.returncode == 0 and "autolfads doctor" in result.stdout
    result = autolfads("doctor")
    assert result.returncode == 0, result.stderr
    assert "OMP_NUM_THREADS       1" in result.stdout  # the tests run the command with OMP_NUM_THREADS=1


def test_bad_search_settings_name_the_option_in_our_words(tmp_path, capsys):
    assert (
        main(
            [
                "search",
                "--data",
                str(tmp_path / "missing.h5"),
                "--workdir",
                str(tmp_path / "search"),
                "--population",
                "1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "invalid search settings: --population: Input should be greater than or equal to 2 (got 1)" in err
    assert "pydantic" not in err


@pytest.mark.parametrize(
    "text, where",
    [
        ("model: [1, 2\n", "at line 2, column 1: expected ',' or ']'"),
        ("model:\n  gen_dim: 1\n   ic_dim: 2\n", "at line 3, column 10: mapping values are not allowed here"),
        ('model: {gen_dim: "16}\n', "at line 2, column 1: found unexpected end of stream"),
    ],
)
def test_bad_yaml_config_is_one_line_with_where(text, where, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    argv = ["train", "--data", str(tmp_path / "missing.h5"), "--checkpoint", str(tmp_path / "run")]
    assert main([*argv, "--config-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"autolfads: error: {path}: invalid YAML {where}") and err.count("\n") == 1, err


def test_bad_yaml_override_is_one_line_naming_the_key(tmp_path, capsys):
    argv = ["train", "--data", str(tmp_path / "missing.h5"), "--checkpoint", str(tmp_path / "run")]
    assert main([*argv, "model.gen_dim", "[16,"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autolfads: error: command-line overrides: model.gen_dim: cannot parse '[16,' as YAML at ")
    assert err.count("\n") == 1, err


def test_bad_kubeflow_options_are_one_line_naming_them(tmp_path, capsys):
    lorenz = Path(__file__).parents[1] / "examples" / "configs" / "lorenz.yaml"
    argv = ["kubeflow", "katib", "--name", "Lorenz", "--image", "i", "--data-pvc", "d", "--config-file", str(lorenz)]
    assert main([*argv, "--population", "8", "--epochs-per-generation", "0", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autolfads: error: --name 'Lorenz': use lower-case letters") and err.count("\n") == 1, err
    assert "--epochs-per-generation must be >= 1, got 0" in err
