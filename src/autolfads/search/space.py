"""The AutoLFADS search space: which hyperparameters PBT samples and perturbs, and how.

Pure logic (no processes, no files besides reading YAML): initial sampling and the perturb-explore step.
"""

import math
import operator
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..config import ModelConfig, TrainConfig
from ..errors import ConfigError
from ..names import MEMBER_HPARAMS

PERTURB_TRIES = 100  # resampling attempts before clipping into the limits
# The config schema's bounds (pydantic's ge/gt/le/lt) as tests and how they read.
BOUNDS = {"ge": (operator.ge, ">="), "gt": (operator.gt, ">"), "le": (operator.le, "<="), "lt": (operator.lt, "<")}


class HyperParameter(BaseModel):
    """One searched hyperparameter: its range, how it is sampled and how far PBT moves it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float = Field(ge=0, description="Lower end of the initial sampling range (and of the limits).")
    high: float = Field(gt=0, description="Upper end of the initial sampling range (and of the limits).")
    log: bool = Field(False, description="Sample log-uniformly (for scales spanning decades: lr, KL and L2 weights).")
    explore_weight: float = Field(
        0.3, gt=0, description="w: perturb multiplies by exp(+-u), u ~ U(log(1 + 0.002 w), log(1 + w))."
    )
    enforce_limits: bool = Field(
        True, description="Keep perturbed values inside [low, high] (resample, then clip); else only positive."
    )
    initial: float | None = Field(None, description="Every member starts at this value instead of a sampled one.")

    @model_validator(mode="after")
    def _check_range(self) -> "HyperParameter":
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be smaller than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-uniform range needs low > 0, got {self.low}")
        if self.initial is not None and self.enforce_limits and not self.low <= self.initial <= self.high:
            raise ValueError(f"initial ({self.initial}) lies outside [{self.low}, {self.high}]")
        if self.initial is not None and (self.initial < 0 or (self.log and self.initial <= 0)):
            raise ValueError(
                f"initial ({self.initial}) must be {'> 0 on a log scale' if self.log else '>= 0'}: "
                "perturbing multiplies it"
            )
        return self

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def perturb(self, value: float, rng: np.random.Generator) -> float:
        """Multiply by a factor log-uniform in +-[log(1 + 0.002 w), log(1 + w)] (tune-tf2's explore)."""
        for _ in range(PERTURB_TRIES):
            magnitude = rng.uniform(math.log1p(0.002 * self.explore_weight), math.log1p(self.explore_weight))
            candidate = value * math.exp(magnitude if rng.random() < 0.5 else -magnitude)
            if not self.enforce_limits or self.low <= candidate <= self.high:
                return float(candidate)
        return float(min(max(candidate, self.low), self.high))


class SearchSpace(BaseModel):
    """Hyperparameters by name: the per-member names of the Trainer (lr_init, dropout_rate, cd_rate,
    kl_ic_weight, kl_co_weight, l2_gen_scale, l2_con_scale, l2_ic_enc_scale, l2_ci_enc_scale)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    params: dict[str, HyperParameter]

    @model_validator(mode="after")
    def _check_names(self) -> "SearchSpace":
        unknown = sorted(set(self.params) - set(MEMBER_HPARAMS))
        if unknown:
            raise ValueError(f"cannot search {unknown}: the searchable hyperparameters are {sorted(MEMBER_HPARAMS)}")
        if not self.params:
            raise ValueError("the search space is empty")
        problems = [problem for name, hp in self.params.items() for problem in config_limit_problems(name, hp)]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def sample_initial(self, population: int, rng: np.random.Generator) -> list[dict[str, float]]:
        """Initial values of every member: the fixed `initial` where given, else sampled."""
        return [
            {name: p.initial if p.initial is not None else p.sample(rng) for name, p in self.params.items()}
            for _ in range(population)
        ]

    def perturb(self, values: Mapping[str, float], rng: np.random.Generator) -> dict[str, float]:
        """Explore: a copy of `values` with every searched hyperparameter perturbed."""
        return {**values, **{name: p.perturb(values[name], rng) for name, p in self.params.items()}}

    def to_dict(self) -> dict:
        return {name: p.model_dump() for name, p in self.params.items()}


def config_bounds(name: str) -> list[tuple[str, float]]:
    """The config schema's bounds on a per-member hyperparameter, e.g. [("ge", 0), ("lt", 1)] for dropout_rate."""
    section = ModelConfig if MEMBER_HPARAMS[name] == "model" else TrainConfig
    metadata = section.model_fields[name].metadata
    return [(kind, getattr(item, kind)) for item in metadata for kind in BOUNDS if hasattr(item, kind)]


def config_limit_problems(name: str, hp: HyperParameter) -> list[str]:
    """Values PBT could give `name` that the config refuses (checked before a search starts, not when a member
    first draws one): low, high and initial outside the schema's bounds, or perturbations without limits on a
    hyperparameter bounded above."""
    bounds = config_bounds(name)
    allowed = ", ".join(f"{BOUNDS[kind][1]} {limit:g}" for kind, limit in bounds)
    where = f"{MEMBER_HPARAMS[name]}.{name}"
    problems = [
        f"{name}.{key} {value:g} is outside what {where} allows ({allowed})"
        for key, value in (("low", hp.low), ("high", hp.high), ("initial", hp.initial))
        if value is not None and not all(BOUNDS[kind][0](value, limit) for kind, limit in bounds)
    ]
    if not hp.enforce_limits and any(kind in ("le", "lt") for kind, _ in bounds):
        problems.append(
            f"{name}: enforce_limits false lets PBT perturb it past what {where} allows ({allowed}); set it true"
        )
    return problems


def default_search_space() -> SearchSpace:
    """The published AutoLFADS search space (Keshtkaran et al. 2022; lfads-torch's KL-IC range)."""
    return SearchSpace(
        params={
            "lr_init": HyperParameter(low=1e-5, high=5e-3, log=True, explore_weight=0.3, initial=0.004),
            "dropout_rate": HyperParameter(low=0.0, high=0.6, explore_weight=0.3),
            "cd_rate": HyperParameter(low=0.01, high=0.7, explore_weight=0.3, initial=0.5),
            "l2_gen_scale": HyperParameter(low=1e-4, high=1.0, log=True, explore_weight=0.8, enforce_limits=False),
            "l2_con_scale": HyperParameter(low=1e-4, high=1.0, log=True, explore_weight=0.8, enforce_limits=False),
            "kl_co_weight": HyperParameter(low=1e-6, high=1e-4, log=True, explore_weight=0.8, enforce_limits=False),
            "kl_ic_weight": HyperParameter(low=1e-6, high=1e-3, log=True, explore_weight=0.8, enforce_limits=False),
        }
    )


def load_search_space(path: str | Path) -> SearchSpace:
    """YAML mapping `name: {low, high, log, explore_weight, enforce_limits, initial}`."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: search-space file not found") from None
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the search space: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of hyperparameter names to "
            "{low, high, log, explore_weight, enforce_limits, initial}"
        )
    try:
        return SearchSpace(params=raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: {'; '.join(map(_problem, err.errors()))}") from None


def _problem(error: dict) -> str:
    """'dropout_rate.high: Input should be ...', or a whole-space check's message as it is."""
    where = ".".join(map(str, error["loc"][1:]))
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
