"""AutoLFADS: population-based training of LFADS models.

Pure logic (`space`, `pbt`), the shared results layout (`results`) and the backends: `embedded` (one
process, the population on the model's population axis) and `ray_backend` (one Ray Tune trial per member).
"""

from pathlib import Path

import torch

from ..config import Config
from ..errors import ConfigError
from ..train.run import load_run_data
from ..train.trainer import METRIC, SAMPLED_METRIC
from .embedded import run_embedded
from .results import SearchOutcome, SearchSettings, prepare_workdir, search_log
from .space import HyperParameter, SearchSpace, default_search_space, load_search_space

__all__ = ["HyperParameter", "SearchOutcome", "SearchSettings", "SearchSpace", "default_search_space", "load_search_space", "search"]


def search(
    config: Config,
    data_path: str | Path | None,
    workdir: str | Path,
    settings: SearchSettings = SearchSettings(),
    space: SearchSpace | None = None,
    report: bool = False,
    **backend_options,
) -> SearchOutcome:
    """Run (or resume) an AutoLFADS search; rerunning with the same arguments continues where it stopped.
    report: write WORKDIR/report.html at the end (the command line does unless --no-report).
    backend_options go to the Ray backend (address, cpus_per_member, gpus_per_member)."""
    space = space or default_search_space()
    workdir = Path(workdir)
    config, data = load_run_data(config, data_path)
    if settings.metric == SAMPLED_METRIC and (settings.backend != "embedded" or not config.train.sampled_metric):
        raise ConfigError(f"PBT on {settings.metric} needs train.sampled_metric true and the embedded backend")
    if settings.metric not in (METRIC, SAMPLED_METRIC) and (settings.backend != "embedded" or config.data.nlb_targets is None):
        raise ConfigError(f"PBT on {settings.metric} needs data.nlb_targets (the targets file of `autolfads data nlb`) and the embedded backend")
    prepare_workdir(workdir, settings, config, space, data)
    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)
    if settings.backend == "ray":
        from .ray_backend import run_ray

        outcome = run_ray(config, data, space, settings, workdir, **backend_options)
    else:
        outcome = run_embedded(config, data, space, settings, workdir)
    if report:  # one place for every backend; matplotlib is imported only when a report is made
        from ..report import report_at_end

        outcome.report = report_at_end(workdir, search_log(workdir))
    return outcome
