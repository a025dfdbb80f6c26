"""`autolfads config show | init` (cli/config.py): both schemas, the documented defaults, no overwriting by
accident, and an initialised config trains."""

from __future__ import annotations

import warnings

import pytest
import yaml

from autolfads.cli import main
from autolfads.config import TF2_CONVENTIONS, Config, load_config, parse_config
from autolfads.config_template import default_config_text


def defaults(tf2: bool) -> Config:
    """Our defaults; in lfads-tf2's spelling with lfads-tf2's conventions where we offer a choice."""
    data = Config().to_dict()
    for key, value in TF2_CONVENTIONS.items() if tf2 else ():
        section, field = key.split(".")
        data[section][field] = value
    return Config.model_validate(data)


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
