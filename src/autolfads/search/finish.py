"""The end of a search, the same for both backends: best_model/, the ensemble and the outcome.

A backend hands over its finished search as one `FinishedSearch` (the embedded backend from its population
state, Ray from its scheduler's record and trial checkpoints); `finish_search` ranks the last generation,
writes the best member as a run folder with its posterior-sampled lfads_output.h5 (sampled from the state in
memory, not read back from the best_model/last.ckpt just written), then the ensemble, and returns the
`SearchOutcome`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..data.dataset import LFADSData
from ..layout import BEST_DIR
from ..train.population_state import PopulationState
from ..train.records import RunLog
from ..train.run import sample_member
from .ensemble import write_ensemble
from .generation import best_ranked, ranked, state_metrics
from .pbt import ranking
from .results import SearchOutcome, SearchRecord, save_member_folder


@dataclass
class FinishedSearch:
    """A finished search as a backend holds it: the record of its decisions and its members at the end."""

    workdir: Path
    config: Config  # the search's (train.select_metric as the search started)
    data: list[LFADSData]  # the sessions the search trained on, read once by `search()`
    record: SearchRecord
    hparams: list[dict[str, float]]  # each member's hyperparameters at the end
    last_rows: list[dict]  # each member's last validation row (metrics by name), in member order
    member_state: Callable[[int], PopulationState]  # member m's one-member state at the end
    select_metric: str
    rank_metric: str  # what PBT ranked the members by (SearchSettings.rank_metric)
    log: RunLog


def finish_search(search: FinishedSearch) -> SearchOutcome:
    """Write best_model/ and the ensemble of a finished search; its outcome."""
    metrics = state_metrics(search.last_rows)
    best = best_ranked(metrics, search.rank_metric)
    hparams = dict(search.hparams[best])
    outputs = write_best_model(search, best, hparams)
    order = ranking(ranked(metrics[search.rank_metric], search.rank_metric))
    config, data = search.config, search.data
    ensemble = write_ensemble(search.workdir, config, data, order, search.member_state, outputs, search.log)
    record = search.record
    return SearchOutcome(
        search.workdir,
        record.generation,
        best,
        metrics[search.select_metric][best],
        hparams,
        outputs[0].parent,
        outputs,
        record.wall_time_s,
        {name: value for name, value in search.last_rows[best].items() if isinstance(value, float)},
        search.select_metric,
        search.rank_metric,
        record.stop_reason,
        ensemble,
    )


def write_best_model(search: FinishedSearch, member: int, hparams: dict[str, float]) -> list[Path]:
    """The member as a run folder that `autolfads sample` and `autolfads train` accept; returns its output files
    (what `autolfads sample` of the folder writes)."""
    folder = search.workdir / BEST_DIR
    state = search.member_state(member)
    member_config = save_member_folder(folder, search.config, hparams, state)
    return sample_member(folder, state, member_config, search.data, search.log)
