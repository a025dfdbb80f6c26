"""What a search keeps in its workdir, the same for every backend.

    search.yaml         the search settings; config.yaml and search_space.yaml: what is searched
    state.csv           generation, member, epoch, hyperparameters and metrics at the end of each generation
    exploits.csv        generation, loser, winner, their metrics, the loser's old and new hyperparameters
    metrics.csv         every member's per-epoch metrics
    search.log          plain-text log
    best_model/         the best member as an ordinary run folder (config.yaml, last.ckpt, metrics.csv)
                        with its posterior-sampled lfads_output.h5
The tables are rewritten atomically from the search's checkpointed record after every generation.
"""

import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ..config import Config, load_config, save_config, with_member_hparams
from ..data.dataset import LFADSData
from ..errors import CheckpointError, ConfigError
from ..files import write_atomic
from ..layout import (
    BEST_DIR,
    CONFIG_FILE,
    EXPLOITS_FILE,
    LAST_CKPT,
    METRICS_FILE,
    SEARCH_LOG,
    SETTINGS_FILE,
    SPACE_FILE,
    STATE_FILE,
)
from ..names import HEADLINE_METRICS, METRIC, PBT_METRICS
from ..train.checkpoint import save_checkpoint
from ..train.records import RunLog, write_csv
from ..train.run import sample
from .pbt import Exploit
from .space import SearchSpace, load_search_space


class SearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    population: int = Field(8, ge=2, description="Members trained side by side.")
    epochs_per_generation: int = Field(
        25, ge=1, description="Epochs between exploit/explore steps (the first generation adds the KL/L2 ramps)."
    )
    max_generations: int = Field(
        50, ge=1, description="Upper bound on generations; the search usually stops earlier on a plateau."
    )
    seed: int = Field(0, ge=0, description="Seed of the initial sampling, the tournaments and the perturbations.")
    backend: Literal["embedded", "ray"] = "embedded"
    # What PBT ranks members by: METRIC or SAMPLED_METRIC (lower is better) or an NLB metric (higher is better;
    # needs data.nlb_targets).
    # Early stopping, the best checkpoint and the stopping rule keep METRIC.
    metric: Literal[tuple(PBT_METRICS)] = METRIC  # type: ignore[valid-type]


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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SearchRecord":
        return cls(**data)

    def add_generation(self, epoch: int, hparams: list[dict[str, float]], metrics: dict[str, list[float]]) -> None:
        """Record the end of a generation: one row per member, before any exploit."""
        for member, values in enumerate(hparams):
            row = {"generation": self.generation, "member": member, "epoch": epoch, **values}
            row.update({name: column[member] for name, column in metrics.items()})
            self.state_rows.append(row)
        finite = [value for value in metrics[METRIC] if math.isfinite(value)]
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


@dataclass
class SearchOutcome:
    workdir: Path
    generations: int
    best_member: int
    best_metric: float
    best_hparams: dict[str, float]
    best_model: Path
    outputs: list[Path]  # the best model's lfads_output.h5, one per session of a stitched model
    wall_time_s: float
    best_metrics: dict[str, float] = field(default_factory=dict)  # the best member's last validation metrics
    ranked_by: str = METRIC  # the metric that made best_member the best (SearchSettings.metric)

    def summary(self, report: Path | None = None) -> str:
        """The best member of the last generation: the one whose value the progress lines showed last, unless
        the search ranks by an NLB metric (then it says so). report: the report.html written, if any."""
        hparams = ", ".join(f"{name} {value:.4g}" for name, value in self.best_hparams.items())
        shown = ", ".join(
            f"{name} {self.best_metrics[name]:.4f}" for name in HEADLINE_METRICS if name in self.best_metrics
        )
        ranking = (
            ""
            if self.ranked_by == METRIC
            else (
                f" (first by {self.ranked_by} {self.best_metrics.get(self.ranked_by, math.nan):.4f}; "
                f"the progress lines show the lowest {METRIC})"
            )
        )
        return (
            f"search complete: {self.generations} generations in {self.wall_time_s / 60:.1f} min; "
            f"best member {self.best_member} of the last generation, "
            f"{METRIC} {self.best_metric:.5f}{ranking}\n  validation: {shown}\n  hyperparameters: {hparams}\n"
            f"  best model: {self.best_model}\n  rates and latents: {', '.join(map(str, self.outputs))}"
            + (f"\n  report: {report}" if report else "")
        )


def prepare_workdir(
    workdir: Path, settings: SearchSettings, config: Config, space: SearchSpace, data: list[LFADSData]
) -> None:
    """Check the workdir is writable with room to spare, and that a rerun searches the same thing."""
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
    if settings_path.exists():
        saved = SearchSettings.model_validate(yaml.safe_load(settings_path.read_text()))
        saved_config, saved_space = load_config(workdir / CONFIG_FILE), load_search_space(workdir / SPACE_FILE)
        changed = [
            name for name, old, new in (("settings", saved, settings), ("space", saved_space, space)) if old != new
        ]
        if _comparable(saved_config) != _comparable(config):
            changed.append("config")
        if changed:
            raise ConfigError(
                f"{workdir} holds a search with different {', '.join(changed)}; rerun with the same ones to resume, "
                "or use a new --workdir"
            )
        return
    save_config(config, workdir / CONFIG_FILE)
    _write_yaml(workdir / SPACE_FILE, space.to_dict())
    _write_yaml(settings_path, settings.model_dump())


def estimated_bytes(config: Config, population: int, data: list[LFADSData]) -> int:
    """Twice the checkpoint (weights + Adam moments, old and new copy during a write) and output file."""
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
    return 2 * (checkpoint + output)


def write_tables(workdir: Path, record: SearchRecord, metric_rows: list[dict]) -> None:
    write_csv(workdir / STATE_FILE, record.state_rows)
    if record.exploit_rows:
        write_csv(workdir / EXPLOITS_FILE, record.exploit_rows)
    write_csv(workdir / METRICS_FILE, metric_rows)


def write_best_model(
    workdir: Path, config: Config, hparams: dict[str, float], member_state: dict, data: list[LFADSData], log: RunLog
) -> list[Path]:
    """The best member as a run folder that `autolfads sample` and `autolfads train` accept; returns its output
    files."""
    folder = workdir / BEST_DIR
    folder.mkdir(exist_ok=True)
    member_config = with_member_hparams(config, hparams)
    save_config(member_config, folder / CONFIG_FILE)
    save_checkpoint({**member_state, "config": member_config.to_dict()}, folder / LAST_CKPT)
    write_csv(folder / METRICS_FILE, member_state["history"])
    return sample(folder, data=data, config=member_config, log=log)


def search_log(workdir: Path) -> RunLog:
    return RunLog(workdir / SEARCH_LOG)


def _comparable(config: Config) -> dict:
    data = config.to_dict()
    for key in ("threads", "device"):  # where it runs may change between reruns, what it computes may not
        data["train"].pop(key)
    return data


def _write_yaml(path: Path, data: dict) -> None:
    write_atomic(path, yaml.safe_dump(data, sort_keys=False))
