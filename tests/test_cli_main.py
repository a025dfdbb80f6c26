"""The top-level command line (cli/main.py): help texts with examples for every command, --version, no
command, and the installed `autolfads` script."""

from __future__ import annotations

import argparse

import pytest

from autolfads import __version__
from autolfads.cli import build_parser, main


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


@pytest.mark.slow
def test_installed_command_help_and_doctor(autolfads):
    result = autolfads("--help")
    assert result.returncode == 0 and "autolfads doctor" in result.stdout
    result = autolfads("doctor")
    assert result.returncode == 0, result.stderr
    assert "OMP_NUM_THREADS       1" in result.stdout  # the tests run the command with OMP_NUM_THREADS=1


pytestmark = pytest.mark.slow


# --- version and help ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--version"], "autolfads 0.1.0"),
        (["--help"], "train"),
        (["train", "--help"], "--checkpoint"),
        (["sample", "--help"], "--num-samples"),
        (["data", "lorenz", "--help"], "--n-conditions"),
    ],
    ids=["version", "help", "train-help", "sample-help", "data-help"],
)
def test_version_and_help_exit_zero(autolfads, args, expected):
    import autolfads as package

    result = autolfads(*args)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    if args == ["--version"]:
        assert result.stdout.strip() == f"autolfads {package.__version__}"


def test_no_command_prints_help_and_exits_2(autolfads):
    result = autolfads()
    assert result.returncode == 2
    assert "COMMAND" in result.stdout and "Traceback" not in result.stderr
