"""config_tf2.py: lfads-tf2 YAML files and overrides read into our config. The Lorenz example maps exactly,
missing keys take lfads-tf2's defaults, its conventions and ramps, ignored keys reported, errors naming the tf2
key."""

from pathlib import Path

import pytest
import yaml

from autolfads.config import (
    apply_overrides,
    default_config,
    load_config,
    parse_config,
)
from autolfads.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "configs"


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- lfads-tf2 schema ------------------------------------------------------------------------------------------


def test_lfads_tf2_lorenz_example_maps_exactly():
    with pytest.warns(UserWarning, match="TRAIN.USE_TB, TRAIN.MODEL_DIR, TRAIN.OVERWRITE"):
        cfg = load_config(EXAMPLES / "lfads_tf2_lorenz.yaml")
    m, t, d = cfg.model, cfg.train, cfg.data
    assert (m.data_dim, m.seq_len, m.cs_dim, m.fp_len) == (29, 50, 0, 0)
    assert (m.ic_enc_dim, m.ci_enc_dim, m.con_dim, m.co_dim, m.ic_dim, m.gen_dim, m.fac_dim) == (
        100, 64, 64, 1, 100, 100, 40
    )  # fmt: skip
    assert (m.dropout_rate, m.cd_rate, m.cd_pass_rate) == (0.05, 0.35, 0.0)
    assert (m.co_prior_tau, m.co_prior_nvar, m.ic_prior_var, m.ic_post_var_min) == (10.0, 0.1, 0.1, 1e-4)
    assert (d.dir, d.prefix) == ("/share/data", "lorenz")  # the README's data/lorenz.h5 in a folder
    assert (t.patience, t.batch_size, t.max_epochs, t.max_grad_norm, t.loss_scale) == (150, 500, 10000, 200.0, 1.0)
    assert t.lr_init == 1e-2
    assert t.lr_schedule is False  # LR.DECAY 1.0
    assert (t.adam_epsilon, t.adam_epsilon_hat) == (1e-7, True)  # TensorFlow's epsilon-hat, kept as it is
    assert (t.lr_rule, m.recon_ic_bins) == ("lfads_tf2", False)
    assert (t.l2_start_epoch, t.l2_increase_epoch, t.l2_ic_enc_scale, t.l2_ci_enc_scale) == (0, 80, 0.0, 0.0)
    assert (t.l2_gen_scale, t.l2_con_scale) == (2.25e-5, 3e-4)
    assert (t.kl_start_epoch, t.kl_increase_epoch, t.kl_ic_weight, t.kl_co_weight) == (0, 80, 6.65e-7, 5e-5)


def test_lfads_tf2_missing_keys_take_lfads_tf2_defaults():
    cfg, ignored = parse_config({"MODEL": {"DATA_DIM": 29}, "TRAIN": {"LR": {"INIT": 0.02}}})
    assert ignored == []
    assert cfg.model.data_dim == 29 and cfg.model.seq_len is None  # shapes still come from the data
    assert (cfg.model.ic_enc_dim, cfg.model.co_dim, cfg.model.gen_dim, cfg.model.cd_rate) == (128, 1, 200, 0.0)
    assert cfg.train.lr_init == 0.02
    assert cfg.train.lr_schedule is True and cfg.train.lr_decay == 0.95  # lfads-tf2 decays by default
    assert (cfg.train.adam_epsilon, cfg.train.adam_epsilon_hat) == (1e-7, True)
    assert (cfg.train.max_epochs, cfg.train.kl_increase_epoch, cfg.train.kl_ic_weight) == (10000, 500, 1.0)


def test_lfads_tf2_lr_decay_below_one_turns_the_schedule_on():
    cfg, _ = parse_config({"TRAIN": {"LR": {"DECAY": 0.9, "PATIENCE": 4, "STOP": 1e-6}}})
    assert (cfg.train.lr_schedule, cfg.train.lr_decay, cfg.train.lr_patience, cfg.train.lr_stop) == (True, 0.9, 4, 1e-6)
    with pytest.raises(ConfigError, match=r"TRAIN\.LR\.DECAY: .*less than 1"):
        parse_config({"TRAIN": {"LR": {"DECAY": 1.5}}})


def test_lfads_tf2_files_keep_lfads_tf2_conventions():
    """A file in lfads-tf2's spelling decays the rate by lfads-tf2's rule, adds epsilon-hat as TensorFlow does and
    leaves the IC-only bins out of the loss; our own schema keeps lfads-torch's choices."""
    cfg, _ = parse_config({"MODEL": {"IC_ENC_SEQ_LEN": 5}, "TRAIN": {"LR": {"DECAY": 0.9}}})
    assert (cfg.model.ic_enc_seq_len, cfg.model.recon_ic_bins, cfg.model.loss_start_bin) == (5, False, 5)
    assert (cfg.train.lr_rule, cfg.train.adam_epsilon_hat) == ("lfads_tf2", True)
    ours = default_config()
    assert (ours.model.recon_ic_bins, ours.train.lr_rule, ours.train.adam_epsilon_hat) == (True, "plateau", False)
    cfg = apply_overrides(ours, ["MODEL.IC_ENC_SEQ_LEN", "4"])  # an lfads-tf2 key brings its meaning along
    assert (cfg.model.ic_enc_seq_len, cfg.model.loss_start_bin) == (4, 4)


@pytest.mark.parametrize(
    ("weights", "kl_ramp", "l2_ramp"),
    [
        ({}, (0, 500), (0, 500)),  # lfads-tf2's defaults: KL and L2 weights on
        ({"KL": {"IC_WEIGHT": 0.0, "CO_WEIGHT": 0.0}}, (0, 0), (0, 500)),
        ({"L2": {"GEN_SCALE": 0.0}}, (0, 500), (0, 0)),  # lfads-tf2's other L2 scales default to 0
        ({"L2": {"GEN_SCALE": 0.0, "CON_SCALE": 1e-4}}, (0, 500), (0, 500)),
        ({"KL": {"IC_WEIGHT": 0.0}}, (0, 500), (0, 500)),  # the CO weight still counts
    ],
)
def test_lfads_tf2_ramps_are_off_when_all_their_weights_are_zero(weights, kl_ramp, l2_ramp):
    train = {"KL": {"START_EPOCH": 0, "INCREASE_EPOCH": 500}, "L2": {"START_EPOCH": 0, "INCREASE_EPOCH": 500}}
    for group, values in weights.items():
        train[group] = {**train[group], **values}
    cfg, _ = parse_config({"TRAIN": train})
    assert (cfg.train.kl_start_epoch, cfg.train.kl_increase_epoch) == kl_ramp
    assert (cfg.train.l2_start_epoch, cfg.train.l2_increase_epoch) == l2_ramp


def test_lfads_tf2_controller_weights_do_not_count_without_a_controller():
    # lfads-tf2 zeroes the controller's KL and L2 weights when a controller dimension is 0: the KL ramp is off
    cfg, _ = parse_config(
        {"MODEL": {"CO_DIM": 0}, "TRAIN": {"KL": {"IC_WEIGHT": 0.0, "CO_WEIGHT": 1.0, "INCREASE_EPOCH": 50}}}
    )
    assert (cfg.train.kl_start_epoch, cfg.train.kl_increase_epoch) == (0, 0)
    with pytest.raises(ConfigError, match=r"TRAIN\.KL\.IC_WEIGHT: expected a number, got 'x'"):
        parse_config({"TRAIN": {"KL": {"IC_WEIGHT": "x"}}})


def test_lfads_tf2_seed_and_cs_fp_keys():
    cfg, _ = parse_config({"SEED": 7, "MODEL": {"DATA_DIM": 182, "CS_DIM": 45, "SEQ_LEN": 180, "FP_LEN": 40}})
    assert cfg.train.seed == 7
    assert (cfg.model.encod_dim, cfg.model.encod_seq_len) == (137, 140)
    cfg, _ = parse_config({"TRAIN": {"SEED": 3}})
    assert cfg.train.seed == 3


def test_lfads_tf2_ignored_keys_are_reported(tmp_path):
    raw = {
        "MODEL": {"DATA_DIM": 29, "READIN_DIM": 29, "CO_AUTOREG_PRIOR": True, "GAMMA_PRIOR": 20.0},
        "TRAIN": {"TUNE_MODE": True, "PBT_MODE": False, "EAGER_MODE": False, "LOG_EPOCHS": 10, "NLL_MEAN": True},
    }
    cfg, ignored = parse_config(raw)
    assert set(ignored) == {
        "MODEL.READIN_DIM", "MODEL.CO_AUTOREG_PRIOR", "MODEL.GAMMA_PRIOR",
        "TRAIN.TUNE_MODE", "TRAIN.PBT_MODE", "TRAIN.EAGER_MODE", "TRAIN.LOG_EPOCHS", "TRAIN.NLL_MEAN",
    }  # fmt: skip
    assert cfg.model.data_dim == 29
    with pytest.warns(UserWarning, match=r"MODEL\.READIN_DIM"):
        load_config(write(tmp_path, yaml.safe_dump(raw)))


@pytest.mark.parametrize("readin", [-1, 0, 29])
def test_lfads_tf2_readin_off_or_square_is_accepted(readin):
    cfg, ignored = parse_config({"MODEL": {"DATA_DIM": 29, "READIN_DIM": readin}})
    assert ignored == ["MODEL.READIN_DIM"] and cfg.model.data_dim == 29


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            {"TRAIN": {"LR": {"INITT": 0.01}}},
            r"TRAIN\.LR\.INITT: unknown lfads-tf2 key \(did you mean TRAIN\.LR\.INIT\?\)",
        ),
        ({"MODEL": {"CO_AUTOREG_PRIOR": False}}, r"MODEL\.CO_AUTOREG_PRIOR: False is not supported"),
        ({"TRAIN": {"NLL_MEAN": False}}, r"TRAIN\.NLL_MEAN: False is not supported"),
        ({"MODEL": {"DATA_DIM": 29, "READIN_DIM": 10}}, r"MODEL\.READIN_DIM: .*read-in.*not supported"),
        ({"TRAIN": {"LR": 0.01}}, r"TRAIN\.LR: expected a mapping"),
        ({"TRAIN": {"LR": {"INIT": -1}}}, r"TRAIN\.LR\.INIT: Input should be greater than 0 \(got -1\)"),
        ({"TRAIN": {"ADAM_EPSILON": "tiny"}}, r"TRAIN\.ADAM_EPSILON: expected a number"),
        ({"TRAIN": {"ADAM_EPSILON": 0}}, r"TRAIN\.ADAM_EPSILON: expected a number > 0"),
        ({"MODEL": {"DATA_DIM": 10, "CS_DIM": 10}}, r"MODEL: cs_dim \(10\) must be smaller"),
        ({"TRAIN": {"DATA": {"DIR": ["a"]}}}, r"TRAIN\.DATA\.DIR: "),
        ({"MODEL": {"DATA_DIM": 29}, "model": {}}, r"model: unknown lfads-tf2 key"),
    ],
)
def test_lfads_tf2_errors_name_the_tf2_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, "x.yaml")


def test_lfads_tf2_yaml11_exponent_strings_are_numbers():
    cfg, _ = parse_config(yaml.safe_load("TRAIN:\n  ADAM_EPSILON: 1e-8\n  KL:\n    IC_WEIGHT: 1e-4\n"))
    assert cfg.train.adam_epsilon == 1e-8
    assert cfg.train.kl_ic_weight == 1e-4


def test_tf2_overrides_convert_like_files():
    cfg = apply_overrides(default_config(), ["TRAIN.ADAM_EPSILON", "1e-7", "TRAIN.LR.DECAY", "0.9"])
    assert (cfg.train.adam_epsilon, cfg.train.adam_epsilon_hat, cfg.train.lr_rule) == (1e-7, True, "lfads_tf2")
    assert (cfg.train.lr_schedule, cfg.train.lr_decay) == (True, 0.9)
    cfg = apply_overrides(cfg, ["TRAIN.LR.DECAY", "1.0"])
    assert cfg.train.lr_schedule is False


def test_ignored_tf2_overrides_warn_and_change_nothing():
    with pytest.warns(UserWarning, match=r"TRAIN\.MODEL_DIR"):
        cfg = apply_overrides(default_config(), ["TRAIN.MODEL_DIR", "/tmp/x"])
    assert cfg == default_config()
