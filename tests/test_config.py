"""config.py: defaults, validation, command-line overrides, atomic save and round trip, our example files."""

import math
import warnings
from pathlib import Path

import pytest
import yaml

from autolfads.config import (
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    default_config,
    load_config,
    save_config,
)
from autolfads.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "configs"


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- defaults and bounds ---------------------------------------------------------------------------------------


def test_defaults_are_valid_and_match_the_documented_values():
    cfg = default_config()
    assert cfg == Config(model=ModelConfig(), train=TrainConfig(), data=DataConfig())
    assert cfg.model.data_dim is None and cfg.model.seq_len is None and cfg.model.ext_input_dim is None
    assert (cfg.model.co_dim, cfg.model.cd_rate, cfg.model.reconstruction) == (4, 0.3, "poisson")
    assert (cfg.train.lr_init, cfg.train.adam_epsilon, cfg.train.loss_scale) == (4e-3, 1e-8, 1e4)
    assert cfg.train.lr_schedule is False and cfg.train.threads == 1 and cfg.train.device == "auto"
    assert cfg.to_dict()["train"]["batch_size"] == 128


def test_every_field_has_a_description():
    for section in (ModelConfig, TrainConfig, DataConfig, Config):
        for name, info in section.model_fields.items():
            assert info.description, f"{section.__name__}.{name}"


@pytest.mark.parametrize(
    "key, value",
    [
        ("model.dropout_rate", 1.0),
        ("model.cd_rate", -0.1),
        ("model.sv_rate", 1.0),
        ("model.cs_dim", -1),
        ("model.gen_dim", 0),
        ("model.reconstruction", "lognormal"),
        ("train.lr_init", 0.0),
        ("train.adam_epsilon", -1e-8),
        ("train.lr_decay", 1.0),
        ("train.batch_size", 0),
        ("train.threads", 0),
        ("train.device", "gpu"),
        ("train.kl_ic_weight", -1e-5),
    ],
)
def test_out_of_bounds_values_are_rejected_naming_the_key(tmp_path, key, value):
    section, field = key.split(".")
    path = write(tmp_path, yaml.safe_dump({section: {field: value}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and key in str(err.value)


def test_wrong_types_are_rejected_with_what_was_expected(tmp_path):
    path = write(tmp_path, "train:\n  batch_size: lots\n")
    with pytest.raises(ConfigError, match=r"train\.batch_size: .*valid integer.*'lots'"):
        load_config(path)
    path = write(tmp_path, "model: 5\n")
    with pytest.raises(ConfigError, match=r"model: .*dictionary"):
        load_config(path)


def test_assignment_is_validated_and_a_failed_one_changes_nothing():
    cfg = default_config()
    cfg.train.lr_init = 1e-3
    assert cfg.train.lr_init == 1e-3
    with pytest.raises(ConfigError, match=r"train\.lr_init"):
        cfg.train.lr_init = -1.0
    assert cfg.train.lr_init == 1e-3
    cfg.model.data_dim = 10
    with pytest.raises(ConfigError, match=r"cs_dim \(10\) must be smaller than data_dim \(10\)"):
        cfg.model.cs_dim = 10
    assert cfg.model.cs_dim == 0  # the cross-field failure was rolled back
    with pytest.raises(ConfigError, match=r"model\.gen_dims: unknown key"):
        cfg.model.gen_dims = 3


# --- computed properties and cross-field checks ---------------------------------------------------------------


def test_computed_properties():
    m = ModelConfig(data_dim=142, cs_dim=35, seq_len=180, fp_len=40)
    assert (m.encod_dim, m.encod_seq_len, m.recon_dim, m.recon_seq_len) == (107, 140, 142, 180)
    assert m.use_controller
    for off in ({"co_dim": 0}, {"con_dim": 0}, {"ci_enc_dim": 0}):
        assert not ModelConfig(**off).use_controller


def test_computed_properties_need_the_data_shape():
    with pytest.raises(ConfigError, match=r"model\.data_dim is not set"):
        _ = ModelConfig().encod_dim
    with pytest.raises(ConfigError, match=r"model\.seq_len is not set"):
        _ = ModelConfig(data_dim=5).recon_seq_len


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"data_dim": 10, "cs_dim": 10}, r"cs_dim \(10\) must be smaller than data_dim \(10\)"),
        ({"seq_len": 50, "fp_len": 50}, r"fp_len \(50\) must be smaller than seq_len \(50\)"),
        ({"seq_len": 50, "fp_len": 10, "ic_enc_seq_len": 40}, r"ic_enc_seq_len \(40\) must be smaller .* \(40\)"),
    ],
)
def test_cross_field_validation(tmp_path, fields, message):
    path = write(tmp_path, yaml.safe_dump({"model": fields}))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_cross_field_checks_wait_for_the_data_shape():
    m = ModelConfig(cs_dim=500, fp_len=500, ic_enc_seq_len=500)  # data_dim / seq_len come from the data later
    assert m.cs_dim == 500
    ModelConfig(data_dim=10, cs_dim=9, seq_len=50, fp_len=10, ic_enc_seq_len=39)  # the largest valid values


# --- our schema: load, save, round trip -------------------------------------------------------------------------


def test_save_load_round_trip_is_exact(tmp_path):
    cfg = default_config()
    cfg.model.data_dim, cfg.model.cs_dim, cfg.model.seq_len, cfg.model.fp_len = 142, 35, 180, 40
    cfg.train.lr_init = 1.0 / 3.0  # no short decimal form
    cfg.train.adam_epsilon = 1e-7 / math.sqrt(1 - 0.999)
    cfg.train.threads = None
    cfg.data.dir = "/share/data"
    path = save_config(cfg, tmp_path / "run.yaml")
    assert path == tmp_path / "run.yaml"
    assert path.read_text().startswith("#")
    assert load_config(path) == cfg
    assert load_config(save_config(load_config(path), path)) == cfg  # overwriting in place
    assert [p.name for p in tmp_path.iterdir()] == ["run.yaml"]  # no temporary file left behind


def test_save_into_a_missing_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot write"):
        save_config(default_config(), tmp_path / "missing" / "run.yaml")


@pytest.mark.parametrize("name", ["lorenz.yaml", "mc_maze_small.yaml", "small_session.yaml"])
def test_our_examples_load_and_round_trip(tmp_path, name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our schema never warns
        cfg = load_config(EXAMPLES / name)
    assert load_config(save_config(cfg, tmp_path / name)) == cfg


@pytest.mark.parametrize("name", ["lorenz.yaml", "mc_maze_small.yaml", "small_session.yaml"])
def test_our_examples_list_every_key(name):
    """They say so in their header; a key added to the schema must be added to them."""
    listed = yaml.safe_load((EXAMPLES / name).read_text())
    missing = [
        f"{section}.{key}"
        for section, info in Config.model_fields.items()
        for key in info.annotation.model_fields
        if key not in listed.get(section, {})
    ]
    assert not missing, f"{name} lacks {missing}"


def test_mc_maze_small_example_values():
    cfg = load_config(EXAMPLES / "mc_maze_small.yaml")
    m, t = cfg.model, cfg.train
    assert (m.data_dim, m.cs_dim, m.seq_len, m.fp_len) == (142, 35, 180, 40)
    assert (m.ic_enc_dim, m.ci_enc_dim, m.con_dim, m.co_dim, m.ic_dim, m.gen_dim, m.fac_dim) == (
        64, 32, 32, 2, 64, 64, 16
    )  # fmt: skip
    assert (m.dropout_rate, m.cd_rate, t.lr_init, t.batch_size) == (0.02, 0.3, 4e-3, 8)
    assert (m.encod_dim, m.encod_seq_len) == (107, 140)


def test_partial_file_keeps_defaults_and_reads_yaml11_exponents(tmp_path):
    # PyYAML reads 1e-3 (no dot) as a string; the field type still makes it a float
    path = write(tmp_path, "train:\n  lr_init: 1e-3\ndata:\n")
    cfg = load_config(path)
    assert cfg.train.lr_init == 1e-3 and isinstance(cfg.train.lr_init, float)
    assert cfg.model == ModelConfig() and cfg.data == DataConfig()


def test_unknown_keys_are_named_with_a_suggestion(tmp_path):
    path = write(tmp_path, "train:\n  lr_innit: 0.01\n")
    with pytest.raises(ConfigError, match=r"train\.lr_innit: unknown key \(did you mean train\.lr_init\?\)"):
        load_config(path)
    path = write(tmp_path, "modle:\n  co_dim: 1\n")
    with pytest.raises(ConfigError, match=r"modle: unknown key"):
        load_config(path)


# --- file-level errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("# only a comment\n", "empty"),
        ("model: [1, 2\n", "invalid YAML"),
        ("- model\n- train\n", "expected a mapping at the top level.*got list"),
        ("just a string\n", "expected a mapping at the top level.*got str"),
    ],
)
def test_unreadable_files_are_named(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(err.value).startswith(str(path))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not found") as err:
        load_config(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(err.value)


def test_errors_are_not_raw_pydantic_errors(tmp_path):
    path = write(tmp_path, "model:\n  co_dim: -1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert "pydantic" not in str(err.value)


# --- command-line overrides ------------------------------------------------------------------------------------


def test_overrides_in_both_styles():
    base = default_config()
    cfg = apply_overrides(
        base,
        ["TRAIN.LR.INIT", "1e-3", "model.dropout_rate", "0.1", "TRAIN.KL.CO_WEIGHT", "5e-5", "train.batch_size", "64"],
    )
    assert cfg.train.lr_init == 1e-3 and isinstance(cfg.train.lr_init, float)
    assert (cfg.model.dropout_rate, cfg.train.kl_co_weight, cfg.train.batch_size) == (0.1, 5e-5, 64)
    assert base == default_config()  # the input is not modified


def test_overrides_parse_yaml_scalars():
    cfg = apply_overrides(
        default_config(),
        ["train.lr_schedule", "true", "train.threads", "null", "data.dir", "/share/data", "data.prefix", "2021"],
    )
    assert cfg.train.lr_schedule is True and cfg.train.threads is None
    assert (cfg.data.dir, cfg.data.prefix) == ("/share/data", "2021")
    cfg = apply_overrides(default_config(), ["train.device", "cuda:1", "train.batch_size", "4.0"])
    assert (cfg.train.device, cfg.train.batch_size) == ("cuda:1", 4)


def test_nlb_keys_default_off_and_override():
    cfg = default_config()
    assert (cfg.train.nlb_every, cfg.data.nlb_targets) == (0, None)
    cfg = apply_overrides(cfg, ["train.nlb_every", "5", "data.nlb_targets", "data/mc_maze_targets.h5"])
    assert (cfg.train.nlb_every, cfg.data.nlb_targets) == (5, "data/mc_maze_targets.h5")
    with pytest.raises(ConfigError, match=r"train\.nlb_every: .*greater than or equal to 0"):
        apply_overrides(cfg, ["train.nlb_every", "-1"])


@pytest.mark.parametrize(
    "pairs, message",
    [
        (["train.batch_size", "0.5"], r"train\.batch_size: .*valid integer"),
        (["TRAIN.BATCH_SIZE", "0.5"], r"TRAIN\.BATCH_SIZE: .*valid integer"),
        (["train.lr_init", "fast"], r"train\.lr_init: .*valid number"),
        (["model.dropout_rate", "1.2"], r"model\.dropout_rate: .*less than 1"),
        (["train.lr_innit", "0.01"], r"train\.lr_innit: unknown key \(did you mean train\.lr_init\?\)"),
        (["TRAIN.LR.INITT", "0.01"], r"TRAIN\.LR\.INITT: unknown key"),
        (["model", "{}"], r"model: unknown key"),
        (["train.lr_init.x", "1"], r"train\.lr_init\.x: unknown key"),
        (["TRAIN.LR.INIT"], r"odd number of items \(1\)"),
        (["TRAIN.LR.INIT", "0.01", "model.co_dim"], r"odd number of items \(3\)"),
        (["model.co_dim", "[1, 2"], r"model\.co_dim: cannot parse"),
        (["MODEL.CO_AUTOREG_PRIOR", "false"], r"MODEL\.CO_AUTOREG_PRIOR: False is not supported"),
    ],
)
def test_bad_overrides_name_the_key(pairs, message):
    with pytest.raises(ConfigError, match=message) as err:
        apply_overrides(default_config(), pairs)
    assert str(err.value).startswith("command-line overrides")


def test_overrides_are_validated_across_fields():
    cfg = apply_overrides(default_config(), ["model.data_dim", "142", "model.cs_dim", "35"])
    with pytest.raises(ConfigError, match=r"model: cs_dim \(142\) must be smaller than data_dim \(142\)"):
        apply_overrides(cfg, ["MODEL.CS_DIM", "142"])
    # READIN_DIM is checked against the data_dim already in the config
    with pytest.warns(UserWarning, match=r"MODEL\.READIN_DIM"):
        apply_overrides(cfg, ["MODEL.READIN_DIM", "142"])
