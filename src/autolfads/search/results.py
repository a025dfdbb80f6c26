"""What a search keeps in its workdir, the same for every backend.

    search.yaml         the search settings; config.yaml and search_space.yaml: what is searched
    state.csv           generation, member, epoch, hyperparameters and metrics at the end of each generation
    exploits.csv        generation, loser, winner, their metrics, the loser's old and new hyperparameters
    metrics.csv         every member's per-epoch metrics
    search.log          plain-text log
    best_model/         the best member as an ordinary run folder (config.yaml, last.ckpt, metrics.csv)
                        with its posterior-sampled lfads_output.h5
    ensemble/           the best members' rates averaged (search.ensemble)
The tables are rewritten atomically from the search's checkpointed record after every generation; best_model/
and ensemble/ are written once it is finished (search.finish, for both backends).
"""

import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import Config, load_saved_config, save_config, with_member_hparams
from ..data.dataset import LFADSData
from ..errors import CheckpointError, ConfigError
from ..files import write_atomic
from ..layout import (
    CONFIG_FILE,
    EXPLOITS_FILE,
    LAST_CKPT,
    METRICS_FILE,
    PBT_STATE_FILE,
    RAY_DIR,
    SEARCH_CKPT,
    SEARCH_LOG,
    SETTINGS_FILE,
    SPACE_FILE,
    STATE_FILE,
)
from ..names import HEADLINE_METRICS, RANK_ONLY_METRICS, SELECT_METRICS, SELECTIONS
from ..train.checkpoint import save_checkpoint
from ..train.population_state import PopulationState
from ..train.records import RunLog, write_csv
from ..train.run import kept_select_metric
from .pbt import Exploit
from .space import SearchSpace, load_search_space


class SearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    population: int = Field(8, ge=2, description="Members trained side by side.")
    epochs_per_generation: int = Field(
        25, ge=1, description="Epochs between exploit/explore steps (the first generation adds the KL/L2 ramps)."
    )
    max_generations: int | None = Field(
        50,
        ge=1,
        description="Upper bound on generations; the search usually stops earlier on a plateau. None: no bound but "
        "the time budget's.",
    )
    seed: int = Field(0, ge=0, description="Seed of the initial sampling, the selections and the perturbations.")
    backend: Literal["embedded", "ray"] = "embedded"
    # What PBT ranks members by instead of train.select_metric (None: by it): SAMPLED_METRIC (lower is better) or
    # an NLB metric (higher is better; needs data.nlb_targets). Early stopping, the best checkpoint and the
    # stopping rule keep train.select_metric.
    metric: Literal[RANK_ONLY_METRICS] | None = None  # type: ignore[valid-type]
    selection: Literal[SELECTIONS] = Field(  # type: ignore[valid-type]
        "truncation",
        description="Who copies whom after a generation: truncation (the bottom quarter copies the top quarter; "
        "the rest train undisturbed) or tournament (random pairs, the worse of each copies the better: "
        "lfads-torch's binary tournament).",
    )
    exploit: bool = Field(
        True,
        description="False: a random-search control. Every member keeps its sampled hyperparameters and its own "
        "weights (no exploit, no perturbation); generations, stopping and the best member as with PBT.",
    )
    time_budget_s: float | None = Field(
        None,
        gt=0,
        description="Wall-time budget in seconds: the search stops after the generation that spends it, or before "
        "one that cannot finish within it (estimated from the generations so far). A rerun counts the time already "
        "spent; a rerun with a larger budget continues.",
    )

    @model_validator(mode="after")
    def _bounded(self) -> "SearchSettings":
        if self.max_generations is None and self.time_budget_s is None:
            raise ValueError("max_generations may be left out only with a time budget (time_budget_s)")
        return self

    @property
    def ranks_by_nlb(self) -> bool:
        """PBT ranks by an NLB metric: the members score them in each generation's last epoch."""
        return self.metric is not None and self.metric.startswith("nlb_")

    def rank_metric(self, select_metric: str) -> str:
        """What PBT ranks members by: `metric`, else the selection metric (train.select_metric)."""
        return self.metric or select_metric


@dataclass
class SearchRecord:
    """Every decision a search has made; saved with the search's weights, so a resume continues exactly."""

    generation: int = 0  # generations completed
    best_by_generation: list[float] = field(default_factory=list)
    state_rows: list[dict] = field(default_factory=list)
    exploit_rows: list[dict] = field(default_factory=list)
    rng_state: dict = field(default_factory=dict)
    finished: bool = False
    wall_time_s: float = 0.0
    generation_s: list[float] = field(default_factory=list)  # each generation's wall time (with what follows it)
    stop_reason: str = ""  # why it finished: STOP_REASONS' keys

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SearchRecord":
        return cls(**data)

    def add_generation(
        self, epoch: int, hparams: list[dict[str, float]], metrics: dict[str, list[float]], select_metric: str
    ) -> None:
        """Record the end of a generation: one row per member, before any exploit; the best by select_metric."""
        for member, values in enumerate(hparams):
            row = {"generation": self.generation, "member": member, "epoch": epoch, **values}
            row.update({name: column[member] for name, column in metrics.items()})
            self.state_rows.append(row)
        finite = [value for value in metrics[select_metric] if math.isfinite(value)]
        self.best_by_generation.append(min(finite) if finite else math.nan)

    def add_exploits(self, exploits: list[Exploit]) -> None:
        for e in exploits:
            row = {
                "generation": e.generation,
                "loser": e.loser,
                "winner": e.winner,
                "loser_metric": e.loser_metric,
                "winner_metric": e.winner_metric,
            }
            row.update({f"old_{name}": value for name, value in e.old.items()})
            row.update({f"new_{name}": value for name, value in e.new.items()})
            self.exploit_rows.append(row)


STOP_REASONS = {
    "max_generations": "reached --max-generations",
    "plateau": "the best metric stopped improving",
    "time_budget": "the time budget",
}


@dataclass
class EnsembleSummary:
    """The averaged rates of the top-k members (search.ensemble), and how they score against the best member."""

    folder: Path
    members: list[int]  # the k members averaged, best first
    score: float  # the validation NLL of the averaged rates (every neuron and bin, per observed entry)
    best_score: float  # the same of the best member's rates alone (k = 1)


@dataclass
class SearchOutcome:
    workdir: Path
    generations: int
    best_member: int
    best_metric: float  # the best member's select_metric
    best_hparams: dict[str, float]
    best_model: Path
    outputs: list[Path]  # the best model's lfads_output.h5, one per session of a stitched model
    wall_time_s: float
    best_metrics: dict[str, float]  # the best member's last validation metrics
    select_metric: str  # train.select_metric
    ranked_by: str  # the metric that made best_member the best (SearchSettings.rank_metric)
    stop_reason: str = ""
    ensemble: EnsembleSummary | None = None

    def summary(self, report: Path | None = None) -> str:
        """The best member of the last generation: the one whose value the progress lines showed last, unless
        the search ranks by another metric (then it says so). report: the report.html written, if any."""
        hparams = ", ".join(f"{name} {value:.4g}" for name, value in self.best_hparams.items())
        shown = ", ".join(
            f"{name} {self.best_metrics[name]:.4f}" for name in HEADLINE_METRICS if name in self.best_metrics
        )
        ranking = (
            ""
            if self.ranked_by == self.select_metric
            else (
                f" (first by {self.ranked_by} {self.best_metrics.get(self.ranked_by, math.nan):.4f}; "
                f"the progress lines show the lowest {self.select_metric})"
            )
        )
        stopped = f" (stopped: {STOP_REASONS[self.stop_reason]})" if self.stop_reason else ""
        return (
            f"search complete: {self.generations} generations in {self.wall_time_s / 60:.1f} min{stopped}; "
            f"best member {self.best_member} of the last generation, "
            f"{self.select_metric} {self.best_metric:.5f}{ranking}\n  validation: {shown}\n"
            f"  hyperparameters: {hparams}\n"
            f"  best model: {self.best_model}\n  rates and latents: {', '.join(map(str, self.outputs))}"
            + self._ensemble_line()
            + (f"\n  report: {report}" if report else "")
        )

    def _ensemble_line(self) -> str:
        if self.ensemble is None:
            return ""
        e = self.ensemble
        return (
            f"\n  ensemble: {e.folder} (rates averaged over {len(e.members)} members: "
            f"{', '.join(map(str, e.members))}); "
            f"validation NLL of the posterior-sampled rates, every neuron and bin: {e.score:.5f} "
            f"(best member alone {e.best_score:.5f})"
        )


def prepare_workdir(
    workdir: Path, settings: SearchSettings, config: Config, space: SearchSpace, data: list[LFADSData]
) -> Config:
    """Check the workdir is writable with room to spare, and that a rerun searches the same thing (its time
    budget may change). Returns the search's config: a rerun keeps the selection metric the search started with."""
    needed_bytes = estimated_bytes(config, settings.population, data)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write-probe"
        probe.write_bytes(b"\0" * 4096)
        probe.unlink()
    except OSError as err:
        raise CheckpointError(f"the search workdir {workdir} is not writable: {err}") from None
    free = shutil.disk_usage(workdir).free
    if free < needed_bytes:
        raise CheckpointError(
            f"the search workdir {workdir} has {free / 2**20:.0f} MiB free; this search needs about "
            f"{needed_bytes / 2**20:.0f} MiB (checkpoints and outputs)"
        )
    settings_path = workdir / SETTINGS_FILE
    if settings_path.exists() and search_started(workdir):
        saved = saved_settings(settings_path)
        saved_config, saved_space = load_saved_config(workdir / CONFIG_FILE), load_search_space(workdir / SPACE_FILE)
        config = kept_select_metric(saved_config, config, search_log(workdir))
        check_rerun(workdir, (saved, saved_space, saved_config), (settings, space, config))
        if saved != settings:  # what a rerun may change (RERUN_MAY_CHANGE)
            _write_yaml(settings_path, settings.model_dump())
        return config
    save_config(config, workdir / CONFIG_FILE)
    _write_yaml(workdir / SPACE_FILE, space.to_dict())
    _write_yaml(settings_path, settings.model_dump())
    return config


def search_started(workdir: Path) -> bool:
    """Whether the search in `workdir` has started training (a first generation saved, or Ray's experiment
    begun). A start that failed before that leaves its settings behind; a rerun replaces them."""
    return (workdir / SEARCH_CKPT).exists() or (workdir / RAY_DIR).exists()


# Settings a rerun may change: they change when the search stops, not what its generations compute.
RERUN_MAY_CHANGE = ("time_budget_s", "max_generations")


def check_rerun(workdir: Path, saved: tuple, given: tuple) -> None:
    """Refuse a rerun that would search something else, naming each difference with both values. saved and
    given: (SearchSettings, SearchSpace, Config). The time budget may change; --max-generations may be raised
    (a search that stopped at the old bound then goes on: SearchDriver.reopen)."""
    (old_settings, old_space, old_config), (settings, space, config) = saved, given
    differences = (
        differences_of(_options(old_settings), _options(settings))
        + differences_of(old_space.to_dict(), space.to_dict(), "search space ")
        + differences_of(_comparable(old_config), _comparable(config))
        + _max_generations_problems(workdir, old_settings.max_generations, settings)
    )
    if differences:
        raise ConfigError(
            f"{workdir} holds a search with different settings: {'; '.join(differences)}. Rerun with the same ones "
            "to resume, or use a new --workdir"
        )


_ABSENT = object()


def differences_of(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'PREFIX.KEY: OLD -> NEW' for every key whose value differs, nested mappings by their dotted keys."""
    lines = []
    for key in dict.fromkeys([*old, *new]):
        before, after = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if isinstance(before, dict) and isinstance(after, dict):
            lines += differences_of(before, after, f"{prefix}{key}.")
        elif before != after:
            lines.append(f"{prefix}{key}: {_shown(before)} -> {_shown(after)}")
    return lines


def _shown(value: object) -> str:
    return "(not set)" if value is _ABSENT else str(value)


def _options(settings: SearchSettings) -> dict:
    """The settings that must stay the same on a rerun, by their command-line option."""
    values = settings.model_dump(exclude=set(RERUN_MAY_CHANGE))
    return {f"--{name.replace('_', '-')}": value for name, value in values.items()}


def _max_generations_problems(workdir: Path, old: int | None, settings: SearchSettings) -> list[str]:
    """--max-generations may only rise on a rerun (None: no bound), and a finished Ray search cannot go on."""
    new = settings.max_generations
    if new == old:
        return []
    if new is not None and (old is None or new < old):
        return [f"--max-generations: {_shown(old)} -> {new} (it may only be raised on a rerun)"]
    state = workdir / RAY_DIR / PBT_STATE_FILE
    if settings.backend == "ray" and state.exists() and json.loads(state.read_text())["record"]["finished"]:
        return [f"--max-generations: {old} -> {new} (the Ray backend does not continue a finished search)"]
    return []


def saved_settings(path: Path) -> SearchSettings:
    """A workdir's search.yaml. Before train.select_metric existed its `metric` named the held-in score too,
    which the search's config now carries (config.saved_config): PBT ranks by the selection metric. Before
    `selection` existed every search ran the binary tournament: a rerun continues with it."""
    raw = yaml.safe_load(path.read_text())
    if raw.get("metric") in SELECT_METRICS:
        raw = {**raw, "metric": None}
    raw.setdefault("selection", "tournament")
    return SearchSettings.model_validate(raw)


def estimated_bytes(config: Config, population: int, data: list[LFADSData]) -> int:
    """Twice the checkpoint (weights + Adam moments, old and new copy during a write) and output files."""
    from ..model import LFADS

    parameters = sum(p.numel() for p in LFADS(config.model, [0]).parameters())
    checkpoint = parameters * 4 * 3 * population * 2
    cfg = config.model
    per_step = cfg.fac_dim + cfg.gen_dim + cfg.con_dim + 3 * cfg.co_dim
    output = (
        sum(split.n_trials * (per_step + session.recon_dim) for session in data for split in session.splits)
        * cfg.recon_seq_len
        * 4
    )
    return 2 * (checkpoint + 2 * output)  # the best model's output and the ensemble's


def write_tables(workdir: Path, record: SearchRecord, metric_rows: list[dict]) -> None:
    write_csv(workdir / STATE_FILE, record.state_rows)
    if record.exploit_rows:
        write_csv(workdir / EXPLOITS_FILE, record.exploit_rows)
    write_csv(workdir / METRICS_FILE, metric_rows)


def save_member_folder(
    folder: Path, config: Config, hparams: dict[str, float], member_state: PopulationState
) -> Config:
    """One member (its one-member state) as a run folder: config.yaml with its hyperparameters, last.ckpt,
    metrics.csv. Returns the member's config."""
    folder.mkdir(parents=True, exist_ok=True)
    member_config = with_member_hparams(config, hparams)
    save_config(member_config, folder / CONFIG_FILE)
    save_checkpoint({**member_state.to_dict(), "config": member_config.to_dict()}, folder / LAST_CKPT)
    write_csv(folder / METRICS_FILE, member_state.history)
    return member_config


def search_log(workdir: Path) -> RunLog:
    return RunLog(workdir / SEARCH_LOG)


def _comparable(config: Config) -> dict:
    data = config.to_dict()
    for key in ("threads", "device"):  # where it runs may change between reruns, what it computes may not
        data["train"].pop(key)
    return data


def _write_yaml(path: Path, data: dict) -> None:
    write_atomic(path, yaml.safe_dump(data, sort_keys=False))
