"""Run configuration: typed, validated settings; YAML in our schema or lfads-tf2's; command-line overrides.

Our schema has three sections, `model`, `train` and `data`, with lower-case keys (see `examples/configs/`).
lfads-tf2 / AutoLFADS YAMLs (MODEL / TRAIN with upper-case nested keys) are read too and mapped onto it,
so `TRAIN.LR.INIT 0.003` works on the command line exactly as it did with the old container.
Every user-facing problem is a `ConfigError` that names the file (or the overrides) and the key.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from autolfads.errors import ConfigError
from autolfads.files import write_text_atomic
from autolfads.names import MEMBER_HPARAMS, OBSERVATION_MODELS


class _Section(BaseModel):
    """Unknown keys are errors and every assignment is validated, cross-field checks included."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    _section: ClassVar[str] = ""

    def __setattr__(self, name: str, value: Any) -> None:
        previous = self.__dict__.get(name)
        try:
            super().__setattr__(name, value)
        except ValidationError as err:
            if name in type(self).model_fields:
                # pydantic keeps the new value when a model-level check fails: undo it
                self.__dict__[name] = previous
            raise ConfigError("; ".join(explain_errors(err, root=self._section))) from None


class SessionDims(BaseModel):
    """One session of a multi-session (stitched) model: its data file's stem and its neurons."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    data_dim: int = Field(ge=1, description="Neurons, held-in + held-out.")
    cs_dim: int = Field(0, ge=0, description="Held-out neurons: the last cs_dim columns.")

    @model_validator(mode="after")
    def _check_held_in(self) -> SessionDims:
        if self.cs_dim >= self.data_dim:
            raise ValueError(
                f"session {self.name}: cs_dim ({self.cs_dim}) must be smaller than data_dim ({self.data_dim})"
            )
        return self


class ModelConfig(_Section):
    _section: ClassVar[str] = "model"

    data_dim: int | None = Field(None, ge=1, description="Neurons, held-in + held-out (None: from the data).")
    cs_dim: int = Field(0, ge=0, description="Held-out (co-smoothing) neurons: the LAST cs_dim columns, never encoded.")
    seq_len: int | None = Field(None, ge=1, description="Time bins incl. forward-prediction (None: from the data).")
    fp_len: int = Field(0, ge=0, description="Forward-prediction bins: the LAST fp_len bins, never encoded.")
    ext_input_dim: int | None = Field(None, ge=0, description="External inputs to the generator (None: from the data).")
    ic_enc_seq_len: int = Field(0, ge=0, description="Leading bins seen only by the initial-condition encoder.")
    recon_ic_bins: bool = Field(
        True,
        description="The ic_enc_seq_len bins count in the loss and the validation NLLs (lfads-torch); false (set by "
        "MODEL.IC_ENC_SEQ_LEN): they count nowhere, as lfads-tf2 infers no rates there (the generator still runs through them).",
    )
    ic_enc_dim: int = Field(64, ge=1, description="Initial-condition encoder GRU size, per direction.")
    ci_enc_dim: int = Field(64, ge=0, description="Controller-input encoder GRU size per direction (0: none).")
    con_dim: int = Field(64, ge=0, description="Controller GRU size (0: no controller).")
    co_dim: int = Field(4, ge=0, description="Controller outputs (inferred inputs) per bin (0: no controller).")
    ic_dim: int = Field(64, ge=1, description="Dimension of the initial-condition latent.")
    gen_dim: int = Field(100, ge=1, description="Generator GRU size.")
    fac_dim: int = Field(40, ge=1, description="Latent factors read out from the generator.")
    ci_lag: int = Field(1, ge=0, description="Bins the controller input is delayed (forward) / advanced (backward) by.")
    cell_clip: float = Field(5.0, gt=0, description="GRU states are clamped to [-cell_clip, cell_clip] every step.")
    dropout_rate: float = Field(0.05, ge=0, lt=1, description="Dropout rate at every dropout site.")
    cd_rate: float = Field(0.3, ge=0, lt=1, description="Coordinated dropout: input entries dropped per step.")
    cd_pass_rate: float = Field(0.0, ge=0, le=1, description="Kept CD entries that still pass gradient (lfads-torch).")
    sv_rate: float = Field(0.0, ge=0, lt=1, description="Sample validation: held-in entries hidden and scored apart.")
    sv_seed: int = Field(0, ge=0, description="Seed of the fixed sample-validation mask.")
    ic_prior_var: float = Field(0.1, gt=0, description="Fixed variance of the initial-condition prior.")
    ic_post_var_min: float = Field(1e-4, ge=0, description="Floor added to the initial-condition posterior variance.")
    co_prior_tau: float = Field(10.0, gt=0, description="Initial time constant (bins) of the AR(1) controller prior.")
    co_prior_nvar: float = Field(0.1, gt=0, description="Initial noise variance of the AR(1) controller prior.")
    reconstruction: Literal[OBSERVATION_MODELS] = Field(
        "poisson",
        description="Observation model of the data (gamma: positive values; zig: zero-inflated gamma, values >= 0).",
    )
    zig_s_min: float = Field(
        0.0, ge=0, description="ZIG minimum event size: events are s_min + Gamma (lfads-torch's gamma location)."
    )
    temporal_shift_std: float = Field(
        0.0, ge=0, description="Train-time temporal shift: std (bins) of each trial-neuron's shift (0: off)."
    )
    temporal_shift_max: int = Field(
        0, ge=0, description="Train-time temporal shift: shifts are clipped to +-max bins (0: off)."
    )
    spike_jitter_width: int = Field(
        0,
        ge=0,
        description="Train-time spike jitter: each spike moves by a uniform offset in [-width, width] bins (0: off).",
    )
    sessions: list[SessionDims] = Field(
        default_factory=list,
        description="Several sessions (data files) stitched into one model: each one's name and neurons, from the data (empty: one session).",
    )
    readin_dim: int | None = Field(
        None,
        ge=1,
        description="Several sessions: the shared dimension each session's read-in maps its held-in neurons to (None: fac_dim).",
    )
    readin_init: Literal["pcr", "random"] = Field(
        "pcr",
        description="Several sessions: pcr initialises read-in and read-out by principal-components regression of condition averages (needs *_cond_idx in the data); random: Gaussian.",
    )
    train_readin: bool = Field(
        False, description="Several sessions: train the read-in matrices (default: fixed at their initialisation)."
    )

    @model_validator(mode="after")
    def _check_sizes(self) -> ModelConfig:
        if self.data_dim is not None and self.cs_dim >= self.data_dim:
            raise ValueError(
                f"cs_dim ({self.cs_dim}) must be smaller than data_dim ({self.data_dim}): some neurons must be held in"
            )
        if self.seq_len is not None:
            if self.fp_len >= self.seq_len:
                raise ValueError(f"fp_len ({self.fp_len}) must be smaller than seq_len ({self.seq_len})")
            if self.ic_enc_seq_len >= self.seq_len - self.fp_len:
                encod = self.seq_len - self.fp_len
                raise ValueError(
                    f"ic_enc_seq_len ({self.ic_enc_seq_len}) must be smaller than seq_len - fp_len ({encod})"
                )
        if self.readin_init == "pcr" and self.readin_dim not in (None, self.fac_dim):
            raise ValueError(
                f"readin_init pcr starts each read-out at its read-in's pseudo-inverse, so readin_dim ({self.readin_dim}) must equal "
                f"fac_dim ({self.fac_dim}): leave readin_dim out, or set readin_init random"
            )
        if len(self.sessions) > 1 and self.data_dim is not None:
            raise ValueError(
                f"data_dim ({self.data_dim}) must be null with several sessions: each session has its own neurons (model.sessions)"
            )
        return self

    def _known(self, name: str) -> int:
        if self.multisession and name == "data_dim":
            raise ConfigError(
                "with several sessions each has its own neurons: take a session's dimensions from model.session(index)"
            )
        value = getattr(self, name)
        if value is None:
            raise ConfigError(f"model.{name} is not set yet: it is read from the data file, which has not been loaded")
        return value

    @property
    def encod_dim(self) -> int:
        """Held-in neurons: what the encoders see."""
        return self._known("data_dim") - self.cs_dim

    @property
    def loss_start_bin(self) -> int:
        """The first bin the loss and the validation NLLs count (recon_ic_bins false: the first after the IC-only bins)."""
        return 0 if self.recon_ic_bins else self.ic_enc_seq_len

    @property
    def encod_seq_len(self) -> int:
        """Bins the encoders see (forward-prediction bins excluded)."""
        return self._known("seq_len") - self.fp_len

    @property
    def recon_dim(self) -> int:
        """Neurons the model reconstructs: held-in + held-out."""
        return self._known("data_dim")

    @property
    def recon_seq_len(self) -> int:
        """Bins the model reconstructs: encoded + forward-prediction."""
        return self._known("seq_len")

    @property
    def use_controller(self) -> bool:
        return self.ci_enc_dim > 0 and self.con_dim > 0 and self.co_dim > 0

    @property
    def multisession(self) -> bool:
        return len(self.sessions) > 1

    @property
    def n_sessions(self) -> int:
        return max(len(self.sessions), 1)

    @property
    def input_dim(self) -> int:
        """What the encoders read: the held-in neurons of one session, or the shared read-in space of several."""
        if self.multisession:
            return self.readin_dim or self.fac_dim
        return self.encod_dim

    def session(self, index: int) -> ModelConfig:
        """This config with one session's neurons (data_dim, cs_dim): the view per-session code works with."""
        if not self.multisession:
            if index != 0:
                raise IndexError(f"session {index} of a one-session model")
            return self
        dims = self.sessions[index]
        return self.model_copy(update={"data_dim": dims.data_dim, "cs_dim": dims.cs_dim, "sessions": []})


class TrainConfig(_Section):
    _section: ClassVar[str] = "train"

    batch_size: int = Field(128, ge=1, description="Trials per training step.")
    drop_last: bool = Field(
        True,
        description="Skip each epoch's last, partial training batch, as lfads-torch and lfads-tf2 do, so an epoch is "
        "a whole number of full batches; a training set smaller than one batch still takes one step on all of it.",
    )
    max_epochs: int = Field(500, ge=1, description="Upper bound on training epochs.")
    patience: int = Field(200, ge=0, description="Early stopping: epochs without a better smoothed valid NLL.")
    seed: int = Field(0, ge=0, description="Seed for initialisation, batching and dropout.")
    threads: int | None = Field(1, ge=1, description="torch CPU threads (None: torch's default).")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    lr_init: float = Field(4e-3, gt=0, description="Initial learning rate.")
    lr_schedule: bool = Field(
        False, description="Decay the learning rate when validation stops improving (rule: lr_rule)."
    )
    lr_rule: Literal["plateau", "lfads_tf2"] = Field(
        "plateau",
        description="plateau: torch's ReduceLROnPlateau on the smoothed valid held-in NLL (lfads-torch). lfads_tf2 (set by "
        "TRAIN.LR.DECAY): from lr_patience epochs after the ramps, at most every lr_patience epochs, decay when the raw "
        "val_loss exceeds the worst of the lr_patience epochs before it; the rate stops at lr_stop.",
    )
    lr_decay: float = Field(0.95, gt=0, lt=1, description="Factor of each scheduled learning-rate decay.")
    lr_patience: int = Field(
        6, ge=0, description="Epochs without improvement tolerated: the next one decays (torch's ReduceLROnPlateau)."
    )
    lr_stop: float = Field(
        1e-5,
        ge=0,
        description="plateau: training stops once the scheduled rate falls below this; lfads_tf2: the rate stops at it and training after an epoch at it.",
    )
    adam_epsilon: float = Field(
        1e-8,
        gt=0,
        description="Adam epsilon, added to the bias-corrected sqrt(v) (PyTorch, lfads-torch) unless adam_epsilon_hat.",
    )
    adam_epsilon_hat: bool = Field(
        False,
        description="adam_epsilon is TensorFlow's epsilon-hat, added to sqrt(v) before the bias correction, as lfads-tf2's "
        "TRAIN.ADAM_EPSILON (which sets this): PyTorch's eps / sqrt(1 - 0.999^t) at step t.",
    )
    weight_decay: float = Field(
        0.0,
        ge=0,
        description="AdamW decoupled weight decay, ramped up with the L2 penalty as lfads-torch does (0: plain Adam).",
    )
    max_grad_norm: float = Field(200.0, gt=0, description="Global gradient-norm clip, on the scaled loss.")
    loss_scale: float = Field(1e4, gt=0, description="Multiplier on the whole loss before backpropagation.")
    kl_start_epoch: int = Field(0, ge=0, description="Epoch at which the KL ramp starts.")
    kl_increase_epoch: int = Field(80, ge=0, description="Epochs over which the KL weights ramp up to full.")
    kl_ic_weight: float = Field(1e-4, ge=0, description="Initial-condition KL weight (mean-reduced NLL convention).")
    kl_co_weight: float = Field(1e-4, ge=0, description="Controller-output KL weight (mean-reduced NLL convention).")
    l2_start_epoch: int = Field(0, ge=0, description="Epoch at which the L2 ramp starts.")
    l2_increase_epoch: int = Field(80, ge=0, description="Epochs over which the L2 weights ramp up to full.")
    l2_gen_scale: float = Field(1e-4, ge=0, description="L2 penalty on the generator's recurrent kernel.")
    l2_con_scale: float = Field(1e-4, ge=0, description="L2 penalty on the controller's recurrent kernel.")
    l2_ic_enc_scale: float = Field(0.0, ge=0, description="L2 penalty on the IC encoder's recurrent kernels.")
    l2_ci_enc_scale: float = Field(0.0, ge=0, description="L2 penalty on the CI encoder's recurrent kernels.")
    num_samples: int = Field(50, ge=1, description="Posterior samples averaged into the output rates file.")
    sampled_metric: bool = Field(
        False,
        description="Also score validation as lfads-torch and lfads-tf2 rank models: every neuron and bin, one posterior "
        "sample, smoothed into smth_val_recon_sampled (search --metric smth_val_recon_sampled); costs a second validation pass.",
    )
    nlb_every: int = Field(
        0,
        ge=0,
        description="Score NLB metrics (nlb_co_bps, ...) of posterior means every N epochs (0: never); needs data.nlb_targets.",
    )
    sbtt: bool = Field(
        False,
        description="Selective backprop through time: NaN bins in the data are missing (inputs 0, no loss there, loss re-weighted).",
    )
    fused_rnn: bool = Field(
        True,
        description="Recurrent loops with the hand-written backward (fast); False: plain autograd, same numbers to float rounding.",
    )


class DataConfig(_Section):
    # a numeric-looking prefix (`prefix: 2021`) is still a file-name prefix
    model_config = ConfigDict(coerce_numbers_to_str=True)
    _section: ClassVar[str] = "data"

    dir: str | None = Field(None, description="Folder holding the HDF5 data files (None: given on the command line).")
    prefix: str = Field("", description="Only data files whose names start with this prefix are used.")
    nlb_targets: str | None = Field(
        None, description="NLB targets file of `autolfads data nlb`: NLB metrics in training and as PBT metrics."
    )


class Config(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig, description="Model architecture and regularisers.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation, loss weights, stopping.")
    data: DataConfig = Field(default_factory=DataConfig, description="Where the data files are.")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict of our schema (what save_config writes)."""
        return self.model_dump()


def default_config() -> Config:
    return Config()


# Every leaf key of our schema, "section.field".
_OWN_KEYS = {
    f"{section}.{field}" for section, info in Config.model_fields.items() for field in info.annotation.model_fields
}

# ---------------------------------------------------------------------------------------------------------------
# lfads-tf2 schema

# Keys that carry over unchanged (the KL and L2 weights too: lfads-tf2 also uses the mean-reduced NLL).
_TF2_RENAMES = {
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
_TF2_REQUIRED = {
    "MODEL.CO_AUTOREG_PRIOR": (True, "only the autoregressive controller-output prior is implemented"),
    "MODEL.SAMPLE_POSTERIORS": (True, "training always samples the posteriors"),
    "MODEL.ALIGN_MODE": (False, "multi-session alignment is not implemented"),
    "TRAIN.NLL_MEAN": (True, "the NLL is always mean-reduced; the KL and L2 weights assume it"),
    "TRAIN.ENCODERS_ONLY": (False, "training only the encoders is not implemented"),
}

# Keys about lfads-tf2's own logging, folders and run modes: accepted, reported, skipped.
_TF2_IGNORED = {
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

_TF2_CONVERTED = {"TRAIN.ADAM_EPSILON", "TRAIN.LR.DECAY", "MODEL.READIN_DIM", "MODEL.IC_ENC_SEQ_LEN"}
_TF2_KEYS = set(_TF2_RENAMES) | set(_TF2_REQUIRED) | _TF2_IGNORED | _TF2_CONVERTED
_TF2_SECTIONS = {"MODEL", "TRAIN", "TRAIN.DATA", "TRAIN.LR", "TRAIN.L2", "TRAIN.KL"}
_TF2_TOP = {"MODEL", "TRAIN", "SEED"}

# A tf2 file means what it meant in lfads-tf2, so keys it leaves out take lfads-tf2's defaults (defaults.py),
# not ours. The data shapes stay "from the data file"; lfads-tf2 required them to match it anyway.
_TF2_DEFAULTS = {
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


def _flatten_tf2(node: Mapping[Any, Any], prefix: str, source: str) -> dict[str, Any]:
    """Nested lfads-tf2 mapping -> {"TRAIN.LR.INIT": value, ...}."""
    flat: dict[str, Any] = {}
    for name, value in node.items():
        key = f"{prefix}{name}"
        if key not in _TF2_SECTIONS:
            flat[key] = value
        elif isinstance(value, Mapping):
            flat.update(_flatten_tf2(value, key + ".", source))
        elif value is not None:  # an empty section (`LR:` with nothing under it) is fine
            raise ConfigError(f"{source}: {key}: expected a mapping of lfads-tf2 keys, got {value!r}")
    return flat


def _tf2_number(key: str, value: Any, source: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)  # also takes '1e-7', which YAML 1.1 reads as a string
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key}: expected a number, got {value!r}") from None


def _from_tf2(flat: Mapping[str, Any], data_dim: Any, source: str) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """lfads-tf2 keys -> (our dotted keys -> values, our key -> the tf2 key it came from, ignored tf2 keys)."""
    updates: dict[str, Any] = {}
    names: dict[str, str] = {}
    ignored: list[str] = []
    for key, value in flat.items():
        if key in _TF2_RENAMES:
            updates[_TF2_RENAMES[key]] = value
            names[_TF2_RENAMES[key]] = key
        elif key == "TRAIN.ADAM_EPSILON":
            eps = _tf2_number(key, value, source)
            if eps <= 0:
                raise ConfigError(f"{source}: {key}: expected a number > 0, got {value!r}")
            updates["train.adam_epsilon"], updates["train.adam_epsilon_hat"] = (
                eps,
                TF2_CONVENTIONS["train.adam_epsilon_hat"],
            )
            names["train.adam_epsilon"] = names["train.adam_epsilon_hat"] = key
        elif key == "TRAIN.LR.DECAY":
            # lfads-tf2 decays on plateau unless DECAY is 1.0
            decay = _tf2_number(key, value, source)
            updates["train.lr_schedule"], updates["train.lr_rule"] = decay != 1.0, TF2_CONVENTIONS["train.lr_rule"]
            if decay != 1.0:
                updates["train.lr_decay"] = decay
            names["train.lr_schedule"] = names["train.lr_decay"] = names["train.lr_rule"] = key
        elif key == "MODEL.IC_ENC_SEQ_LEN":
            updates["model.ic_enc_seq_len"], updates["model.recon_ic_bins"] = (
                value,
                TF2_CONVENTIONS["model.recon_ic_bins"],
            )
            names["model.ic_enc_seq_len"] = names["model.recon_ic_bins"] = key
        elif key == "MODEL.READIN_DIM":
            # <= 0 is lfads-tf2's "no read-in layer". A square read-in only re-mixes the neurons before the
            # encoders; we never build one, so that value is accepted and reported as ignored.
            if not isinstance(value, int) or isinstance(value, bool) or not (value <= 0 or value == data_dim):
                raise ConfigError(
                    f"{source}: {key}: a low-dimensional read-in layer is not supported; "
                    f"expected -1 or MODEL.DATA_DIM ({data_dim}), got {value!r}"
                )
            ignored.append(key)
        elif key in _TF2_REQUIRED:
            expected, why = _TF2_REQUIRED[key]
            if value is not expected:
                raise ConfigError(f"{source}: {key}: {value!r} is not supported ({why}); expected {expected}")
            ignored.append(key)
        elif key in _TF2_IGNORED:
            ignored.append(key)
        else:
            raise ConfigError(f"{source}: {key}: unknown lfads-tf2 key{_did_you_mean(key, _TF2_KEYS)}")
    return updates, names, ignored


def _tf2_ramps_off(flat: Mapping[str, Any], source: str) -> dict[str, int]:
    """lfads-tf2 turns the KL (L2) ramp off when every KL weight (L2 scale) is 0, so its length delays neither
    early stopping nor learning-rate decay; without a controller its weights do not count (it zeroes them)."""

    def nonzero(*keys: str) -> bool:
        return any(_tf2_number(key, flat[key], source) != 0 for key in keys)

    controller = all(
        _tf2_number(key, flat[key], source) > 0 for key in ("MODEL.CI_ENC_DIM", "MODEL.CON_DIM", "MODEL.CO_DIM")
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


# ---------------------------------------------------------------------------------------------------------------
# Validation and error messages


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _did_you_mean(key: str, candidates: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(candidates), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def explain_errors(error: ValidationError, names: Mapping[str, str] | None = None, root: str = "") -> list[str]:
    """One 'key: problem' line per pydantic error, keys spelled the way the user wrote them."""
    names = names or {}
    lines = []
    for e in error.errors():
        path = _join(root, *map(str, e["loc"]))
        key = names.get(path, path)
        if e["type"] in ("extra_forbidden", "no_such_attribute"):
            lines.append(f"{key}: unknown key{_did_you_mean(path, _OWN_KEYS)}")
        elif e["type"] == "value_error":  # our cross-field checks
            lines.append(f"{key}: {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{key}: {e['msg']} (got {e['input']!r})")
    return lines


def _validate(tree: Mapping[str, Any], source: str, names: Mapping[str, str] | None = None) -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(f"{source}: " + "; ".join(explain_errors(err, names))) from None


def _nest(tree: dict[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    for dotted, value in updates.items():
        section, field = dotted.split(".")
        tree.setdefault(section, {})[field] = value
    return tree


# ---------------------------------------------------------------------------------------------------------------
# Public API


def parse_config(raw: Any, source: str = "<config>") -> tuple[Config, list[str]]:
    """A parsed YAML document in either schema -> (Config, lfads-tf2 keys that were accepted but ignored)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping at the top level (model/train/data, or lfads-tf2's MODEL/TRAIN), "
            f"got {type(raw).__name__}"
        )
    if not raw.keys() & _TF2_TOP:
        # an empty section (`data:` with everything commented out) means defaults
        return _validate({k: {} if v is None else v for k, v in raw.items()}, source), []
    flat = {**_TF2_DEFAULTS, **_flatten_tf2(raw, "", source)}
    updates, names, ignored = _from_tf2(flat, flat.get("MODEL.DATA_DIM"), source)
    updates |= _tf2_ramps_off(flat, source)
    names |= {"model": "MODEL", "train": "TRAIN", "data": "TRAIN.DATA"}
    return _validate(_nest({}, updates), source, names), ignored


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read a YAML config in our schema or lfads-tf2's. Ignored lfads-tf2 keys are reported with warnings.warn."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config file: {err}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if raw is None:
        raise ConfigError(f"{path}: config file is empty")
    config, ignored = parse_config(raw, str(path))
    if ignored:
        warnings.warn(f"{path}: lfads-tf2 keys with no effect here were ignored: {', '.join(ignored)}", stacklevel=2)
    return config


def apply_overrides(config: Config, pairs: Sequence[str]) -> Config:
    """A new Config with command-line `KEY VALUE ...` pairs applied; keys in our schema or lfads-tf2's.

    Values are YAML scalars ("1e-3", "true", "null"), then validated like file values.
    """
    source = "command-line overrides"
    if len(pairs) % 2:
        raise ConfigError(
            f"{source}: expected KEY VALUE pairs, got an odd number of items ({len(pairs)}): {' '.join(pairs)}"
        )
    tree = config.to_dict()
    names: dict[str, str] = {}
    ignored: list[str] = []
    for key, text in zip(pairs[::2], pairs[1::2], strict=True):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: {key}: cannot parse {text!r}: {err}") from None
        if key in _OWN_KEYS:
            _nest(tree, {key: value})
            names.pop(key, None)
        elif key in _TF2_KEYS:
            updates, tf2_names, skipped = _from_tf2({key: value}, tree["model"]["data_dim"], source)
            _nest(tree, updates)
            names |= tf2_names
            ignored += skipped
        else:
            raise ConfigError(f"{source}: {key}: unknown key{_did_you_mean(key, _OWN_KEYS | _TF2_KEYS)}")
    if ignored:
        warnings.warn(f"{source}: lfads-tf2 keys with no effect here were ignored: {', '.join(ignored)}", stacklevel=2)
    return _validate(tree, source, names)


def save_config(config: Config, path: str | os.PathLike[str]) -> Path:
    """Write `config` in our schema, atomically (readers never see a half-written file). Returns the path."""
    path = Path(path)
    body = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)
    try:
        return write_text_atomic(path, "# autolfads configuration (load with autolfads.config.load_config)\n" + body)
    except OSError as err:
        raise ConfigError(f"{path}: cannot write config file: {err}") from None


def member_hparams(config: Config) -> dict[str, float]:
    """The per-member hyperparameters' values in `config`."""
    return {name: float(getattr(getattr(config, section), name)) for name, section in MEMBER_HPARAMS.items()}


def with_member_hparams(config: Config, values: Mapping[str, float]) -> Config:
    """A copy of `config` with per-member hyperparameters replaced (validated by the config schema)."""
    unknown = set(values) - set(MEMBER_HPARAMS)
    if unknown:
        raise KeyError(f"not per-member hyperparameters: {sorted(unknown)}; known: {sorted(MEMBER_HPARAMS)}")
    data = config.to_dict()
    for name, value in values.items():
        data[MEMBER_HPARAMS[name]][name] = float(value)
    try:
        return type(config).model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid member hyperparameters {dict(values)}: {problems}") from None
