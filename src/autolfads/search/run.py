"""`search()`: run or resume an AutoLFADS search in a workdir with the embedded or the Ray backend."""

from pathlib import Path

from ..config import Config
from ..data.dataset import missing_bins_note
from ..errors import ConfigError
from ..model.cores import pick_core
from ..names import SAMPLED_METRIC
from ..runtime import set_torch_threads
from ..train.run import load_run_data
from ..train.trainer import resolve_device
from .embedded import embedded_plan, run_embedded
from .results import SearchOutcome, SearchSettings, prepare_workdir, search_log
from .space import SearchSpace, default_search_space


def search(
    config: Config,
    data_path: str | Path | None,
    workdir: str | Path,
    settings: SearchSettings | None = None,
    space: SearchSpace | None = None,
    **backend_options,
) -> SearchOutcome:
    """Run (or resume) an AutoLFADS search; rerunning with the same arguments continues where it stopped.
    backend_options go to the backend: embedded (workers, threads_per_worker, gpus), Ray (address, cpus_per_member,
    gpus_per_member, members_per_trial, cpus_per_trial, gpus_per_trial). The closing summary
    (outcome.summary()) is appended to search.log, not shown: the caller shows it (the command line prints it
    once, on stdout, and writes the report)."""
    settings = settings or SearchSettings()
    space = space or default_search_space()
    workdir = Path(workdir)
    config, data = load_run_data(config, data_path)
    if settings.metric == SAMPLED_METRIC and (settings.backend != "embedded" or not config.train.sampled_metric):
        raise ConfigError(f"PBT on {settings.metric} needs train.sampled_metric true and the embedded backend")
    if settings.ranks_by_nlb and config.data.nlb_targets is None:
        raise ConfigError(f"PBT on {settings.metric} needs data.nlb_targets (the targets file of `autolfads data nlb`)")
    plan = embedded_plan(config, settings.population, **backend_options) if settings.backend == "embedded" else None
    config = prepare_workdir(workdir, settings, config, space, data)
    if note := missing_bins_note(data):
        search_log(workdir)(note)
    if settings.backend == "ray":
        from .ray_backend import run_ray

        set_torch_threads(config.train.threads)  # the driver's own threads; every trial sets its own
        outcome = run_ray(config, data, space, settings, workdir, **backend_options)
    else:
        # the core the workers will choose, chosen once here: a C++ build happens before they start
        core_note = pick_core(config.train.recurrent_core, resolve_device(config.train.device))[1]
        if core_note:
            search_log(workdir)(core_note)
        outcome = run_embedded(config, data, space, settings, workdir, plan)
    search_log(workdir).write(outcome.summary())
    return outcome
