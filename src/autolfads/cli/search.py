"""`autolfads search`: AutoLFADS, population-based training on this machine or a Ray cluster."""

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..layout import SEARCH_LOG, SETTINGS_FILE
from ..names import (
    ALL_METRIC,
    DEFAULT_SELECT_METRIC,
    HELDIN_METRIC,
    PBT_METRICS,
    SAMPLED_METRIC,
    SELECT_METRICS,
    SELECTIONS,
)
from ..sizing import GENERATION_STEPS
from .options import EXAMPLES, add_command
from .train import run_config, sized_config

if TYPE_CHECKING:
    from ..config import Config
    from ..search.results import SearchSettings

RAY_OPTIONS = ("address", "cpus_per_member", "gpus_per_member", "members_per_trial", "cpus_per_trial", "gpus_per_trial")
EMBEDDED_OPTIONS = ("workers", "threads_per_worker", "gpus")
EPOCHS_PER_GENERATION = 25  # with a config file; without one, sized from the data


def add_search(commands: argparse._SubParsersAction) -> None:
    search = add_command(
        commands,
        "search",
        run_search,
        help="AutoLFADS: population-based training of LFADS hyperparameters",
        description="Population-based training (AutoLFADS): members train in synchronous generations; after each, "
        "random pairs compete on the smoothed validation NLL and each loser copies the winner's weights and optimizer "
        "state and perturbs its hyperparameters. Rerunning the same command resumes from the last completed "
        "generation. Trailing KEY VALUE pairs override the config as in `autolfads train`.",
        epilog="examples:\n  autolfads search --data data/lorenz.h5 --config-file examples/configs/lorenz.yaml "
        "--population 8 --workdir runs/search\n"
        "  autolfads search ... --backend ray --address auto --cpus-per-member 2 --gpus-per-member 0.5\n"
        "  autolfads search ... --backend ray --address auto --members-per-trial 8 --gpus-per-trial 1 "
        "--cpus-per-trial 4",
        formatter_class=EXAMPLES,
    )
    search.set_defaults(takes_overrides=True)
    add_search_options(search)
    add_backend_options(search)
    search.add_argument(
        "--resume",
        action="store_true",
        help="require an existing search in --workdir to continue (rerunning resumes anyway)",
    )
    search.add_argument(
        "--metric",
        choices=list(PBT_METRICS),
        help=f"what selects and ranks members. {ALL_METRIC} or {HELDIN_METRIC}: the same as the override "
        f"train.select_metric (default {DEFAULT_SELECT_METRIC}: every neuron and bin; or held-in neurons and bins "
        "only), which early stopping, the best checkpoint and the stopping rule use too. PBT's ranking alone: "
        f"{SAMPLED_METRIC} (every neuron and bin, a posterior sample, as lfads-torch and lfads-tf2; needs "
        "train.sampled_metric true) or an NLB metric (higher is better; needs data.nlb_targets)",
    )
    search.add_argument(
        "--no-report", dest="report", action="store_false", help="do not write WORKDIR/report.html at the end"
    )


def add_search_options(search: argparse.ArgumentParser) -> None:
    """What is searched, where, and for how long."""
    search.add_argument(
        "--data",
        type=Path,
        help="HDF5 data file, a folder or a glob (several files: one stitched model); default: data.dir of the config",
    )
    search.add_argument(
        "--config-file",
        type=Path,
        help="YAML config (our schema or lfads-tf2's); default: the built-in defaults sized from the data (printed)",
    )
    search.add_argument(
        "--search-space",
        type=Path,
        help="YAML search space (name: {low, high, log, explore_weight, enforce_limits, initial}); "
        "default: the published AutoLFADS one",
    )
    search.add_argument("--population", type=int, default=8, help="members (default 8)")
    search.add_argument(
        "--workdir", type=Path, required=True, help="folder for the search's checkpoints, tables, logs and best model"
    )
    search.add_argument(
        "--epochs-per-generation",
        type=int,
        help=f"epochs between exploits (the first generation adds the KL/L2 ramps); default: about "
        f"{GENERATION_STEPS} optimizer steps with no --config-file, else {EPOCHS_PER_GENERATION}",
    )
    search.add_argument(
        "--max-generations",
        type=int,
        help="upper bound on generations (default 50; with --time-budget none: the budget bounds them)",
    )
    search.add_argument(
        "--time-budget",
        type=duration_s,
        help="wall time for the search, e.g. 90s, 10m, 1.5h: it stops after the generation that spends it, or before "
        "one that cannot finish in it (estimated from the generations so far), and writes the best model as usual; "
        "a rerun counts the time already spent, a rerun with a larger budget continues",
    )
    search.add_argument(
        "--selection",
        choices=SELECTIONS,
        default="truncation",
        help="who copies whom after a generation: truncation (default; the bottom quarter copies the top quarter, "
        "the rest train undisturbed) or tournament (random pairs, the worse copies the better, as lfads-torch)",
    )
    search.add_argument(
        "--no-exploit",
        dest="exploit",
        action="store_false",
        help="a random-search control: every member keeps its sampled hyperparameters and its own weights (no "
        "exploit, no perturbation); the same generations, stopping and best member",
    )
    search.add_argument(
        "--seed", type=int, default=0, help="seed of the sampling, selections and perturbations (default 0)"
    )


def add_backend_options(search: argparse.ArgumentParser) -> None:
    """Where the members train: worker processes on this machine, or Ray trials."""
    search.add_argument(
        "--backend",
        choices=["embedded", "ray"],
        default="embedded",
        help="embedded: this machine, worker processes each training a slice of the population on its population "
        "axis (default); ray: Ray Tune trials on a cluster",
    )
    search.add_argument(
        "--workers",
        type=int,
        help="embedded: worker processes, each training a slice of the population (default: one per usable CPU, at "
        "most the population; on GPUs one per GPU)",
    )
    search.add_argument(
        "--threads-per-worker",
        type=int,
        help="embedded: torch threads of each worker (default: its share of the usable CPUs; train.threads applies "
        "to `autolfads train`)",
    )
    search.add_argument(
        "--gpus",
        type=gpu_indices,
        metavar="0,2",
        help="embedded: the GPUs the workers run on, as torch numbers them after CUDA_VISIBLE_DEVICES (default: "
        "every visible GPU, one worker each; --workers N spreads N workers over them)",
    )
    search.add_argument(
        "--address", help="Ray cluster to join: auto or HOST:PORT (default: start a local Ray instance on 127.0.0.1)"
    )
    search.add_argument(
        "--cpus-per-member",
        type=float,
        default=1.0,
        help="Ray: CPUs per member, also its torch thread count (default 1)",
    )
    search.add_argument(
        "--gpus-per-member", type=float, default=0.0, help="Ray: GPUs per member, fractions allowed (default 0)"
    )
    search.add_argument(
        "--members-per-trial",
        type=int,
        default=1,
        help="Ray: members trained together by one trial on one population axis (default 1); the trial asks for the "
        "per-trial resources",
    )
    search.add_argument(
        "--cpus-per-trial",
        type=float,
        help="Ray: CPUs of one trial, also its torch threads (default: members per trial x --cpus-per-member)",
    )
    search.add_argument(
        "--gpus-per-trial",
        type=float,
        help="Ray: GPUs of one trial, shared by its members (default: members per trial x --gpus-per-member)",
    )


def run_search(args: argparse.Namespace, overrides: list[str]) -> int:
    from ..search.run import search
    from ..search.space import load_search_space

    if args.resume and not (args.workdir / SETTINGS_FILE).exists():
        raise ConfigError(f"--resume: {args.workdir} holds no search to continue")
    settings = search_settings(args)  # a bad option is named before the data is read
    check_placement(args, settings.population, overrides)
    config, generation = search_config(args, selection_overrides(args, overrides))
    settings = settings.model_copy(update={"epochs_per_generation": generation})
    space = load_search_space(args.search_space) if args.search_space else None
    names = RAY_OPTIONS if args.backend == "ray" else EMBEDDED_OPTIONS
    misplaced = [name for name in EMBEDDED_OPTIONS if args.backend == "ray" and getattr(args, name) is not None]
    if misplaced:
        given = ", ".join("--" + name.replace("_", "-") for name in misplaced)
        raise ConfigError(
            f"{given}: options of the embedded backend; a Ray trial's share is --cpus-per-member, "
            "--gpus-per-member or the per-trial options"
        )
    outcome = search(config, args.data, args.workdir, settings, space, **{name: getattr(args, name) for name in names})
    report = write_search_report(args.workdir) if args.report else None
    print(outcome.summary(report))
    return 0


def check_placement(args: argparse.Namespace, population: int, overrides: list[str]) -> None:
    """Where the members would run, checked before the data is read (and before sizing is said): the embedded
    workers and GPUs, or the members of a Ray trial."""
    from ..config import Config, apply_overrides
    from ..search.embedded import embedded_plan

    if args.backend == "embedded":
        device = apply_overrides(Config(), overrides)  # train.device, from the overrides
        embedded_plan(device, population, args.workers, args.threads_per_worker, args.gpus)
    elif args.members_per_trial is not None and not 1 <= args.members_per_trial <= population:
        raise ConfigError(
            f"--members-per-trial must be between 1 and the population ({population}), got {args.members_per_trial}"
        )


def gpu_indices(text: str) -> tuple[int, ...]:
    """--gpus 0,2 -> (0, 2); whether they exist is checked against the GPUs torch sees (search.workers)."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GPU indices separated by commas, e.g. 0,2; got {text!r}") from None


def search_config(args: argparse.Namespace, overrides: list[str]) -> tuple["Config", int]:
    """run_config's config and the generations' length: --epochs-per-generation, else with no config file sized
    from the data (both said on stderr), else EPOCHS_PER_GENERATION."""
    from ..sizing import describe_sizing, generation_epochs, steps_per_epoch

    given = args.epochs_per_generation
    if args.config_file is not None:
        config = run_config(args.config_file, args.data, overrides)
        return config, EPOCHS_PER_GENERATION if given is None else given
    shape, config = sized_config(args.data, overrides)
    line = describe_sizing(shape, config)
    if given is None:
        given = generation_epochs(shape.train_trials, config.train.batch_size)
        steps = given * steps_per_epoch(shape.train_trials, config.train.batch_size)
        line += f", generations of {given} epochs ({steps} steps)"
    print(line, file=sys.stderr)
    return config, given


def duration_s(text: str) -> float:
    """--time-budget: a number with s, m or h (90s, 10m, 1.5h) -> seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        seconds = float(text[:-1]) * units[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 10m or 1.5h; got {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration; got {text!r}")
    return seconds


def selection_overrides(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """--metric naming a selection metric is the override train.select_metric (after the others: it wins)."""
    if args.metric in SELECT_METRICS:
        return [*overrides, "train.select_metric", args.metric]
    return overrides


def search_settings(args: argparse.Namespace) -> "SearchSettings":
    """The SearchSettings of the command line; a bad value is one line naming its option."""
    from pydantic import ValidationError

    from ..config import explain_errors
    from ..search.results import SearchSettings

    try:
        given = args.max_generations is not None or args.time_budget is not None
        bound = {"max_generations": args.max_generations} if given else {}
        return SearchSettings(
            population=args.population,
            # with none given, checked as the default here; search_config sizes it from the data
            epochs_per_generation=EPOCHS_PER_GENERATION
            if args.epochs_per_generation is None
            else args.epochs_per_generation,
            seed=args.seed,
            backend=args.backend,
            metric=None if args.metric in SELECT_METRICS else args.metric,
            selection=args.selection,
            exploit=args.exploit,
            time_budget_s=args.time_budget,
            **bound,
        )
    except ValidationError as err:
        options = {name: "--" + name.replace("_", "-") for name in SearchSettings.model_fields} | {
            "time_budget_s": "--time-budget"
        }
        raise ConfigError("invalid search settings: " + "; ".join(explain_errors(err, options))) from None


def write_search_report(workdir: Path) -> Path | None:
    """WORKDIR/report.html; a failure is logged in search.log, not raised."""
    from ..report.build import report_at_end  # matplotlib is imported only when a report is made
    from ..train.records import RunLog

    return report_at_end(workdir, RunLog(workdir / SEARCH_LOG))
