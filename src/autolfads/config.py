"""Run configuration: typed, validated settings; YAML in our schema or lfads-tf2's; command-line overrides.

Our schema has three sections, `model`, `train` and `data`, with lower-case keys (see `examples/configs/`).
lfads-tf2 / AutoLFADS YAMLs (MODEL / TRAIN with upper-case nested keys) are read too, mapped onto it by
`config_tf2`, so `TRAIN.LR.INIT 0.003` works on the command line exactly as it did with the old container.
Every user-facing problem is a `ConfigError` that names the file (or the overrides) and the key.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from autolfads import config_tf2
from autolfads.config_tf2 import TF2_CONVENTIONS
from autolfads.errors import ConfigError, did_you_mean
from autolfads.files import write_atomic
from autolfads.names import (
    ALL_METRIC,
    DEFAULT_SELECT_METRIC,
    HELDIN_METRIC,
    LEGACY_SELECT_METRIC,
    MEMBER_HPARAMS,
    OBSERVATION_MODELS,
    SELECT_METRICS,
)

__all__ = [
    "TF2_CONVENTIONS",
    "Config",
    "DataConfig",
    "ModelConfig",
    "SessionDims",
    "TrainConfig",
    "apply_overrides",
    "default_config",
    "explain_errors",
    "load_config",
    "load_saved_config",
    "member_hparams",
    "parse_config",
    "read_yaml",
    "save_config",
    "saved_config",
    "with_member_hparams",
    "yaml_problem",
]


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
        "MODEL.IC_ENC_SEQ_LEN): they count nowhere, as lfads-tf2 infers no rates there (the generator still runs "
        "through them).",
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
        description="Several sessions (data files) stitched into one model: each one's name and neurons, from the data "
        "(empty: one session).",
    )
    readin_dim: int | None = Field(
        None,
        ge=1,
        description="Several sessions: the shared dimension each session's read-in maps its held-in neurons to (None: "
        "fac_dim).",
    )
    readin_init: Literal["pcr", "random"] = Field(
        "pcr",
        description="Several sessions: pcr initialises read-in and read-out by principal-components regression of "
        "condition averages (needs *_cond_idx in the data); random: Gaussian.",
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
                f"readin_init pcr starts each read-out at its read-in's pseudo-inverse, so readin_dim "
                f"({self.readin_dim}) must equal fac_dim ({self.fac_dim}): leave readin_dim out, or set readin_init "
                "random"
            )
        if len(self.sessions) > 1 and self.data_dim is not None:
            raise ValueError(
                f"data_dim ({self.data_dim}) must be null with several sessions: each session has its own neurons "
                "(model.sessions)"
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
        """The first bin the loss and the validation NLLs count (recon_ic_bins false: the first after the IC-only
        bins)."""
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


# train.recurrent_core's values, and the two keys it replaced
RECURRENT_CORES = ("auto", "cpp", "manual", "autograd")
OLD_CORE_KEYS = ("fused_rnn", "compiled_loops")


class TrainConfig(_Section):
    _section: ClassVar[str] = "train"

    batch_size: int = Field(128, ge=1, description="Trials per training step.")
    drop_last: bool = Field(
        True,
        description="Skip each epoch's last, partial training batch, as lfads-torch and lfads-tf2 do, so an epoch is "
        "a whole number of full batches; a training set smaller than one batch still takes one step on all of it.",
    )
    max_epochs: int = Field(500, ge=1, description="Upper bound on training epochs.")
    patience: int = Field(
        200, ge=0, description="Early stopping: epochs without a better selection metric (select_metric)."
    )
    select_metric: Literal[SELECT_METRICS] = Field(  # type: ignore[valid-type]
        DEFAULT_SELECT_METRIC,
        description="What selects a model: early stopping, the best checkpoint, the plateau learning-rate rule and "
        f"the search's ranking and stopping rule. {ALL_METRIC}: the smoothed validation NLL of every reconstructed "
        f"neuron and bin (held-in, held-out, forward; val_recon); {HELDIN_METRIC}: held-in neurons and encoded bins "
        "only (what the encoder sees; the only score before this setting existed, which a resumed older run keeps).",
    )
    seed: int = Field(0, ge=0, description="Seed for initialisation, batching and dropout.")
    threads: int | None = Field(1, ge=1, description="torch CPU threads (None: torch's default).")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    lr_init: float = Field(4e-3, gt=0, description="Initial learning rate.")
    lr_schedule: bool = Field(
        False, description="Decay the learning rate when validation stops improving (rule: lr_rule)."
    )
    lr_rule: Literal["plateau", "lfads_tf2"] = Field(
        "plateau",
        description="plateau: torch's ReduceLROnPlateau on the selection metric (select_metric), as lfads-torch. "
        "lfads_tf2 "
        "(set by TRAIN.LR.DECAY): from lr_patience epochs after the ramps, at most every lr_patience epochs, decay "
        "when the raw val_loss exceeds the worst of the lr_patience epochs before it; the rate stops at lr_stop.",
    )
    lr_decay: float = Field(0.95, gt=0, lt=1, description="Factor of each scheduled learning-rate decay.")
    lr_patience: int = Field(
        6, ge=0, description="Epochs without improvement tolerated: the next one decays (torch's ReduceLROnPlateau)."
    )
    lr_stop: float = Field(
        1e-5,
        ge=0,
        description="plateau: training stops once the scheduled rate falls below this; lfads_tf2: the rate stops at it "
        "and training after an epoch at it.",
    )
    adam_epsilon: float = Field(
        1e-8,
        gt=0,
        description="Adam epsilon, added to the bias-corrected sqrt(v) (PyTorch, lfads-torch) unless adam_epsilon_hat.",
    )
    adam_epsilon_hat: bool = Field(
        False,
        description="adam_epsilon is TensorFlow's epsilon-hat, added to sqrt(v) before the bias correction, as "
        "lfads-tf2's TRAIN.ADAM_EPSILON (which sets this): PyTorch's eps / sqrt(1 - 0.999^t) at step t.",
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
    checkpoint_every_s: float = Field(
        30.0,
        ge=0,
        description="`autolfads train`: seconds between writes of last.ckpt, best.ckpt and metrics.csv (0: every "
        "epoch); the end of a run, an error and Ctrl-C write them too. A kill -9 loses at most this much training.",
    )
    num_samples: int = Field(50, ge=1, description="Posterior samples averaged into the output rates file.")
    sampled_metric: bool = Field(
        False,
        description="Also score validation as lfads-torch and lfads-tf2 rank models: every neuron and bin, one "
        "posterior sample, smoothed into smth_val_recon_sampled (search --metric smth_val_recon_sampled); costs a "
        "second validation pass.",
    )
    nlb_every: int = Field(
        0,
        ge=0,
        description="Score NLB metrics (nlb_co_bps, ...) of posterior means every N epochs (0: never); needs "
        "data.nlb_targets.",
    )
    sbtt: bool = Field(
        False,
        description="Selective backprop through time: NaN bins in the data are missing (inputs 0, no loss there, loss "
        "re-weighted).",
    )
    recurrent_core: Literal[RECURRENT_CORES] = Field(  # type: ignore[valid-type]
        "auto",
        description="How the recurrent loops run; every core gives the same numbers to float rounding. cpp: the "
        "loops and their hand-written backward in C++, built at first use with the machine's C++ compiler and ninja "
        "and cached (the fastest on a CPU); manual: the same hand-written backward in python loops; autograd: plain "
        "autograd (the reference); auto: cpp where it builds and the run is on a CPU, else manual, with one line "
        "saying why. Replaces train.fused_rnn and train.compiled_loops, which are still read (with a line saying so).",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_old_core_keys(cls, values: Any) -> Any:
        """train.fused_rnn / train.compiled_loops (before recurrent_core) -> recurrent_core, said in one line."""
        if not isinstance(values, Mapping) or not values.keys() & OLD_CORE_KEYS:
            return values
        values = dict(values)
        old = {key: values.pop(key) for key in OLD_CORE_KEYS if key in values}
        core = old_core_setting(old.get("fused_rnn", True), old.get("compiled_loops", "auto"))
        given = ", ".join(f"train.{key} {value}" for key, value in old.items())
        if "recurrent_core" in values and values["recurrent_core"] != core:
            raise ValueError(
                f"{given} means train.recurrent_core {core}, but train.recurrent_core is {values['recurrent_core']}"
            )
        warnings.warn(
            f"{given}: read as train.recurrent_core {core} (the older keys' replacement)", FutureWarning, stacklevel=2
        )
        return {**values, "recurrent_core": core}


def old_core_setting(fused_rnn: Any, compiled_loops: Any) -> str:
    """The recurrent_core that train.fused_rnn and train.compiled_loops (the settings before it) meant."""

    def word(value: Any) -> str:
        return str(value).lower()

    fused, compiled = word(fused_rnn), word(compiled_loops)
    if fused not in ("true", "false") or compiled not in ("true", "false", "auto"):
        raise ValueError(
            f"train.fused_rnn {fused_rnn!r}, train.compiled_loops {compiled_loops!r}: expected true or false, and "
            "true, false or auto"
        )
    if fused == "false":
        if compiled == "true":
            raise ValueError("train.compiled_loops true needs train.fused_rnn true (use train.recurrent_core cpp)")
        return "autograd"
    return {"true": "cpp", "false": "manual", "auto": "auto"}[compiled]


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
# Validation and error messages


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def explain_errors(error: ValidationError, names: Mapping[str, str] | None = None, root: str = "") -> list[str]:
    """One 'key: problem' line per pydantic error, keys spelled the way the user wrote them."""
    names = names or {}
    lines = []
    for e in error.errors():
        path = _join(root, *map(str, e["loc"]))
        key = names.get(path, path)
        if e["type"] in ("extra_forbidden", "no_such_attribute"):
            lines.append(f"{key}: unknown key{did_you_mean(path, _OWN_KEYS)}")
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
    if not raw.keys() & config_tf2.TF2_TOP:
        # an empty section (`data:` with everything commented out) means defaults
        return _validate({k: {} if v is None else v for k, v in raw.items()}, source), []
    updates, names, ignored = config_tf2.document_updates(raw, source)
    return _validate(_nest({}, updates), source, names), ignored


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read a YAML config in our schema or lfads-tf2's. Ignored lfads-tf2 keys are reported with warnings.warn."""
    raw = read_yaml(path, "config file")
    if raw is None:
        raise ConfigError(f"{path}: config file is empty")
    config, ignored = parse_config(raw, str(path))
    if ignored:
        warnings.warn(f"{path}: lfads-tf2 keys with no effect here were ignored: {', '.join(ignored)}", stacklevel=2)
    return config


def saved_config(tree: Mapping[str, Any], source: str = "<saved config>") -> Config:
    """A config autolfads saved with a run, a search or a checkpoint (our schema). One saved before
    train.select_metric existed selected by smth_val_nll_heldin: it keeps that metric, not today's default."""
    train = tree.get("train") if isinstance(tree, Mapping) else None
    if isinstance(train, Mapping) and "select_metric" not in train:
        tree = {**tree, "train": {**train, "select_metric": LEGACY_SELECT_METRIC}}
    return _validate(tree, source)


def load_saved_config(path: str | os.PathLike[str]) -> Config:
    """The config.yaml of a run folder or a search workdir (see saved_config)."""
    raw = read_yaml(path, "config file")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected the mapping autolfads writes (model/train/data)")
    return saved_config(raw, str(path))


def read_yaml(path: str | os.PathLike[str], what: str) -> Any:
    """The parsed YAML document of a file; a missing, unreadable or malformed file is one line naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read {what}: {err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML{yaml_problem(err)}") from None


def yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's error in one line, where and what ("at line 2, column 1: expected ..."), without its excerpts."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if problem is None:
        return f": {str(err).splitlines()[0]}"
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and context_mark is not None:
        context += f" from line {context_mark.line + 1}, column {context_mark.column + 1}"
    return f"{where}: {problem}" + (f" ({context})" if context else "")


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
            raise ConfigError(f"{source}: {key}: cannot parse {text!r} as YAML{yaml_problem(err)}") from None
        if key in _OWN_KEYS:
            _nest(tree, {key: value})
            names.pop(key, None)
        elif key in config_tf2.TF2_KEYS:
            updates, tf2_names, skipped = config_tf2.key_updates({key: value}, tree["model"]["data_dim"], source)
            _nest(tree, updates)
            names |= tf2_names
            ignored += skipped
        else:
            raise ConfigError(f"{source}: {key}: unknown key{did_you_mean(key, _OWN_KEYS | config_tf2.TF2_KEYS)}")
    if ignored:
        warnings.warn(f"{source}: lfads-tf2 keys with no effect here were ignored: {', '.join(ignored)}", stacklevel=2)
    return _validate(tree, source, names)


def save_config(config: Config, path: str | os.PathLike[str]) -> Path:
    """Write `config` in our schema, atomically (readers never see a half-written file). Returns the path."""
    path = Path(path)
    body = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)
    try:
        return write_atomic(path, "# autolfads configuration (load with autolfads.config.load_config)\n" + body)
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
