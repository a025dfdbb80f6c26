"""lfads-tf2 / AutoLFADS YAML (MODEL / TRAIN with upper-case nested keys) mapped onto our schema.

A tf2 file means what it meant in lfads-tf2: keys it leaves out take lfads-tf2's defaults, keys whose meaning
differs are converted, and keys about lfads-tf2's own logging are accepted and reported as ignored. The
result is our dotted keys ("train.lr_init") and values, validated by `config` like a file in our schema.
"""

from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConfigError, did_you_mean

# Keys that carry over unchanged (the KL and L2 weights too: lfads-tf2 also uses the mean-reduced NLL).
TF2_RENAMES = {
    "SEED": "train.seed",  # top level in early lfads-tf2
    "MODEL.DATA_DIM": "model.data_dim",
    "MODEL.CS_DIM": "model.cs_dim",
    "MODEL.SEQ_LEN": "model.seq_len",
    "MODEL.FP_LEN": "model.fp_len",
    "MODEL.EXT_INPUT_DIM": "model.ext_input_dim",
    "MODEL.IC_ENC_DIM": "model.ic_enc_dim",
    "MODEL.CI_ENC_DIM": "model.ci_enc_dim",
    "MODEL.CON_DIM": "model.con_dim",
    "MODEL.CO_DIM": "model.co_dim",
    "MODEL.IC_DIM": "model.ic_dim",
    "MODEL.GEN_DIM": "model.gen_dim",
    "MODEL.FAC_DIM": "model.fac_dim",
    "MODEL.DROPOUT_RATE": "model.dropout_rate",
    "MODEL.CD_RATE": "model.cd_rate",
    "MODEL.CD_PASS_RATE": "model.cd_pass_rate",
    "MODEL.SV_RATE": "model.sv_rate",
    "MODEL.SV_SEED": "model.sv_seed",
    "MODEL.CELL_CLIP": "model.cell_clip",
    "MODEL.CI_LAG": "model.ci_lag",
    "MODEL.IC_POST_VAR_MIN": "model.ic_post_var_min",
    "MODEL.IC_PRIOR_VAR": "model.ic_prior_var",
    "MODEL.CO_PRIOR_TAU": "model.co_prior_tau",
    "MODEL.CO_PRIOR_NVAR": "model.co_prior_nvar",
    "TRAIN.SEED": "train.seed",
    "TRAIN.DATA.DIR": "data.dir",
    "TRAIN.DATA.PREFIX": "data.prefix",
    "TRAIN.BATCH_SIZE": "train.batch_size",
    "TRAIN.MAX_EPOCHS": "train.max_epochs",
    "TRAIN.PATIENCE": "train.patience",
    "TRAIN.LOSS_SCALE": "train.loss_scale",
    "TRAIN.MAX_GRAD_NORM": "train.max_grad_norm",
    "TRAIN.LR.INIT": "train.lr_init",
    "TRAIN.LR.STOP": "train.lr_stop",
    "TRAIN.LR.PATIENCE": "train.lr_patience",
    "TRAIN.L2.START_EPOCH": "train.l2_start_epoch",
    "TRAIN.L2.INCREASE_EPOCH": "train.l2_increase_epoch",
    "TRAIN.L2.IC_ENC_SCALE": "train.l2_ic_enc_scale",
    "TRAIN.L2.CI_ENC_SCALE": "train.l2_ci_enc_scale",
    "TRAIN.L2.GEN_SCALE": "train.l2_gen_scale",
    "TRAIN.L2.CON_SCALE": "train.l2_con_scale",
    "TRAIN.KL.START_EPOCH": "train.kl_start_epoch",
    "TRAIN.KL.INCREASE_EPOCH": "train.kl_increase_epoch",
    "TRAIN.KL.IC_WEIGHT": "train.kl_ic_weight",
    "TRAIN.KL.CO_WEIGHT": "train.kl_co_weight",
}

# Keys whose value must be what we implement; they change nothing else.
TF2_REQUIRED = {
    "MODEL.CO_AUTOREG_PRIOR": (True, "only the autoregressive controller-output prior is implemented"),
    "MODEL.SAMPLE_POSTERIORS": (True, "training always samples the posteriors"),
    "MODEL.ALIGN_MODE": (False, "multi-session alignment is not implemented"),
    "TRAIN.NLL_MEAN": (True, "the NLL is always mean-reduced; the KL and L2 weights assume it"),
    "TRAIN.ENCODERS_ONLY": (False, "training only the encoders is not implemented"),
}

# Keys about lfads-tf2's own logging, folders and run modes: accepted, reported, skipped.
TF2_IGNORED = {
    "TRAIN.USE_TB",
    "TRAIN.MODEL_DIR",
    "TRAIN.OVERWRITE",
    "TRAIN.LOG_EPOCHS",
    "TRAIN.LOG_HPS",
    "TRAIN.TUNE_MODE",
    "TRAIN.PBT_MODE",
    "TRAIN.EAGER_MODE",
    "TRAIN.L2.READIN_SCALE",  # penalises a read-in layer we never build
    "MODEL.GAMMA_PRIOR",  # only for a Gamma observation model
}

# What lfads-tf2 did where we offer a choice; the keys that imply them (TRAIN.ADAM_EPSILON, TRAIN.LR.DECAY,
# MODEL.IC_ENC_SEQ_LEN) set them, and every lfads-tf2 file has those keys (they have defaults).
TF2_CONVENTIONS = {"train.adam_epsilon_hat": True, "train.lr_rule": "lfads_tf2", "model.recon_ic_bins": False}

_CONVERTED = {"TRAIN.ADAM_EPSILON", "TRAIN.LR.DECAY", "MODEL.READIN_DIM", "MODEL.IC_ENC_SEQ_LEN"}
TF2_KEYS = set(TF2_RENAMES) | set(TF2_REQUIRED) | TF2_IGNORED | _CONVERTED
_SECTIONS = {"MODEL", "TRAIN", "TRAIN.DATA", "TRAIN.LR", "TRAIN.L2", "TRAIN.KL"}
TF2_TOP = {"MODEL", "TRAIN", "SEED"}

# A tf2 file means what it meant in lfads-tf2, so keys it leaves out take lfads-tf2's defaults (defaults.py),
# not ours. The data shapes stay "from the data file"; lfads-tf2 required them to match it anyway.
TF2_DEFAULTS = {
    "MODEL.IC_ENC_DIM": 128,
    "MODEL.CI_ENC_DIM": 128,
    "MODEL.CON_DIM": 128,
    "MODEL.CO_DIM": 1,
    "MODEL.IC_DIM": 64,
    "MODEL.GEN_DIM": 200,
    "MODEL.FAC_DIM": 50,
    "MODEL.DROPOUT_RATE": 0.05,
    "MODEL.CD_RATE": 0.0,
    "MODEL.CD_PASS_RATE": 0.0,
    "MODEL.SV_RATE": 0.0,
    "MODEL.SV_SEED": 0,
    "MODEL.CO_PRIOR_TAU": 10.0,
    "MODEL.CO_PRIOR_NVAR": 0.1,
    "MODEL.IC_PRIOR_VAR": 0.1,
    "MODEL.IC_POST_VAR_MIN": 1e-4,
    "MODEL.CELL_CLIP": 5.0,
    "MODEL.CI_LAG": 1,
    "MODEL.IC_ENC_SEQ_LEN": 0,
    "TRAIN.PATIENCE": 200,
    "TRAIN.BATCH_SIZE": 128,
    "TRAIN.MAX_EPOCHS": 10000,
    "TRAIN.MAX_GRAD_NORM": 200.0,
    "TRAIN.LOSS_SCALE": 1e4,
    "TRAIN.LR.INIT": 0.01,
    "TRAIN.LR.STOP": 1e-5,
    "TRAIN.LR.DECAY": 0.95,
    "TRAIN.LR.PATIENCE": 6,
    "TRAIN.ADAM_EPSILON": 1e-7,
    "TRAIN.L2.START_EPOCH": 0,
    "TRAIN.L2.INCREASE_EPOCH": 500,
    "TRAIN.L2.IC_ENC_SCALE": 0.0,
    "TRAIN.L2.CI_ENC_SCALE": 0.0,
    "TRAIN.L2.GEN_SCALE": 2000.0,
    "TRAIN.L2.CON_SCALE": 0.0,
    "TRAIN.KL.START_EPOCH": 0,
    "TRAIN.KL.INCREASE_EPOCH": 500,
    "TRAIN.KL.IC_WEIGHT": 1.0,
    "TRAIN.KL.CO_WEIGHT": 1.0,
}


def flatten(node: Mapping[Any, Any], source: str, prefix: str = "") -> dict[str, Any]:
    """Nested lfads-tf2 mapping -> {"TRAIN.LR.INIT": value, ...}."""
    flat: dict[str, Any] = {}
    for name, value in node.items():
        key = f"{prefix}{name}"
        if key not in _SECTIONS:
            flat[key] = value
        elif isinstance(value, Mapping):
            flat.update(flatten(value, source, key + "."))
        elif value is not None:  # an empty section (`LR:` with nothing under it) is fine
            raise ConfigError(f"{source}: {key}: expected a mapping of lfads-tf2 keys, got {value!r}")
    return flat


def document_updates(raw: Mapping[Any, Any], source: str) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """A whole lfads-tf2 document -> (our dotted keys -> values, our key -> the tf2 key it came from, ignored
    tf2 keys); keys it leaves out take lfads-tf2's defaults."""
    flat = {**TF2_DEFAULTS, **flatten(raw, source)}
    updates, names, ignored = key_updates(flat, flat.get("MODEL.DATA_DIM"), source)
    updates |= ramps_off(flat, source)
    names |= {"model": "MODEL", "train": "TRAIN", "data": "TRAIN.DATA"}
    return updates, names, ignored


def key_updates(
    flat: Mapping[str, Any], data_dim: Any, source: str
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """lfads-tf2 keys -> (our dotted keys -> values, our key -> the tf2 key it came from, ignored tf2 keys)."""
    updates: dict[str, Any] = {}
    names: dict[str, str] = {}
    ignored: list[str] = []
    for key, value in flat.items():
        if key in TF2_RENAMES:
            converted = {TF2_RENAMES[key]: value}
        elif key in _CONVERTERS:
            converted = _CONVERTERS[key](key, value, source)
        elif key == "MODEL.READIN_DIM":
            _check_readin(key, value, data_dim, source)
            converted = None
        elif key in TF2_REQUIRED:
            expected, why = TF2_REQUIRED[key]
            if value is not expected:
                raise ConfigError(f"{source}: {key}: {value!r} is not supported ({why}); expected {expected}")
            converted = None
        elif key in TF2_IGNORED:
            converted = None
        else:
            raise ConfigError(f"{source}: {key}: unknown lfads-tf2 key{did_you_mean(key, TF2_KEYS)}")
        if converted is None:
            ignored.append(key)
        else:
            updates |= converted
            names |= dict.fromkeys(converted, key)
    return updates, names, ignored


def _number(key: str, value: Any, source: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)  # also takes '1e-7', which YAML 1.1 reads as a string
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key}: expected a number, got {value!r}") from None


def _adam_epsilon(key: str, value: Any, source: str) -> dict[str, Any]:
    eps = _number(key, value, source)
    if eps <= 0:
        raise ConfigError(f"{source}: {key}: expected a number > 0, got {value!r}")
    return {"train.adam_epsilon": eps, "train.adam_epsilon_hat": TF2_CONVENTIONS["train.adam_epsilon_hat"]}


def _lr_decay(key: str, value: Any, source: str) -> dict[str, Any]:
    decay = _number(key, value, source)  # lfads-tf2 decays on plateau unless DECAY is 1.0
    updates = {"train.lr_schedule": decay != 1.0, "train.lr_rule": TF2_CONVENTIONS["train.lr_rule"]}
    return updates | ({"train.lr_decay": decay} if decay != 1.0 else {})


def _ic_enc_seq_len(key: str, value: Any, source: str) -> dict[str, Any]:
    return {"model.ic_enc_seq_len": value, "model.recon_ic_bins": TF2_CONVENTIONS["model.recon_ic_bins"]}


_CONVERTERS: dict[str, Callable[[str, Any, str], dict[str, Any]]] = {
    "TRAIN.ADAM_EPSILON": _adam_epsilon,
    "TRAIN.LR.DECAY": _lr_decay,
    "MODEL.IC_ENC_SEQ_LEN": _ic_enc_seq_len,
}


def _check_readin(key: str, value: Any, data_dim: Any, source: str) -> None:
    """<= 0 is lfads-tf2's "no read-in layer". A square read-in only re-mixes the neurons before the encoders;
    we never build one, so that value is accepted and reported as ignored."""
    if not isinstance(value, int) or isinstance(value, bool) or not (value <= 0 or value == data_dim):
        raise ConfigError(
            f"{source}: {key}: a low-dimensional read-in layer is not supported; "
            f"expected -1 or MODEL.DATA_DIM ({data_dim}), got {value!r}"
        )


def ramps_off(flat: Mapping[str, Any], source: str) -> dict[str, int]:
    """lfads-tf2 turns the KL (L2) ramp off when every KL weight (L2 scale) is 0, so its length delays neither
    early stopping nor learning-rate decay; without a controller its weights do not count (it zeroes them)."""

    def nonzero(*keys: str) -> bool:
        return any(_number(key, flat[key], source) != 0 for key in keys)

    controller = all(
        _number(key, flat[key], source) > 0 for key in ("MODEL.CI_ENC_DIM", "MODEL.CON_DIM", "MODEL.CO_DIM")
    )
    kl = nonzero("TRAIN.KL.IC_WEIGHT") or (controller and nonzero("TRAIN.KL.CO_WEIGHT"))
    l2 = nonzero("TRAIN.L2.IC_ENC_SCALE", "TRAIN.L2.GEN_SCALE") or (
        controller and nonzero("TRAIN.L2.CI_ENC_SCALE", "TRAIN.L2.CON_SCALE")
    )
    off = {}
    for ramp, on in (("kl", kl), ("l2", l2)):
        if not on:
            off |= {f"train.{ramp}_start_epoch": 0, f"train.{ramp}_increase_epoch": 0}
    return off
