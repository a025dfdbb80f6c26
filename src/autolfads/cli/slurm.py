"""`autolfads slurm search | ray-wait`: the command line over `deploy.slurm`.

`slurm search` checks everything it can before writing anything (the config and its overrides, the search
space, the data path, the resources; with SLURM on this machine also the partition and whether its nodes
have the CPUs and GPUs asked for), then writes the sbatch script to -o FILE (atomically) or stdout, and with
--submit hands it to sbatch. `slurm ray-wait` is what the Ray script runs to wait for its nodes.
"""

import argparse
import glob
import importlib.util
import shutil
import sys
from pathlib import Path

from ..errors import ConfigError, MissingDependency
from ..names import PBT_METRICS
from .options import EXAMPLES, add_command
from .search import add_search_options

# Options of `autolfads search` the script passes on as given: (option, attribute), paths made absolute.
PATH_OPTIONS = (("--data", "data"), ("--config-file", "config_file"), ("--search-space", "search_space"))
VALUE_OPTIONS = (
    ("--population", "population"),
    ("--epochs-per-generation", "epochs_per_generation"),
    ("--max-generations", "max_generations"),
    ("--seed", "seed"),
    ("--metric", "metric"),
)
RAY_OPTIONS = (
    ("--cpus-per-member", "cpus_per_member"),
    ("--gpus-per-member", "gpus_per_member"),
    ("--members-per-trial", "members_per_trial"),
    ("--cpus-per-trial", "cpus_per_trial"),
    ("--gpus-per-trial", "gpus_per_trial"),
)


def add_slurm(commands: argparse._SubParsersAction) -> None:
    slurm = commands.add_parser(
        "slurm",
        help="SLURM: an sbatch script of a requeue-safe search, on one node or Ray on several",
        description="Write (and submit) the sbatch script of an AutoLFADS search on a SLURM cluster (docs/slurm.md).",
        epilog="examples:\n  autolfads slurm search --data /shared/lorenz.h5 --config-file cfg.yaml --workdir "
        "/shared/runs/lorenz --population 16 --cpus 16 --time 24:00:00 -o lorenz.sbatch\n"
        "  autolfads slurm search ... --backend ray --nodes 4 --cpus 32 --cpus-per-member 2 --submit -o lorenz.sbatch",
        formatter_class=EXAMPLES,
    )
    kinds = slurm.add_subparsers(dest="slurm_command", metavar="COMMAND", required=True)
    add_slurm_search(kinds)
    add_ray_wait(kinds)


def add_slurm_search(kinds: argparse._SubParsersAction) -> None:
    parser = add_command(
        kinds,
        "search",
        run_slurm_search,
        help="the sbatch script of `autolfads search`: requeue-safe, one node (embedded) or several (Ray)",
        description="An sbatch script that runs `autolfads search` with --requeue and the job's signals handled: "
        "every start of the job runs the same command in the same --workdir, which resumes from the last completed "
        "generation, so a requeued or preempted job ends with the same tables as an uninterrupted one. "
        "--backend embedded: one node, a worker per CPU (or per GPU). --backend ray: Ray on the job's nodes (head on "
        "the first, a worker per node by srun), stopped at the end. Trailing KEY VALUE pairs override the config as "
        "in `autolfads search`.",
        epilog="example: autolfads slurm search --data /shared/lorenz.h5 --config-file cfg.yaml --workdir "
        "/shared/runs/lorenz --population 16 --cpus 16 --partition cpu --time 12:00:00 -o lorenz.sbatch",
    )
    parser.set_defaults(takes_overrides=True)
    add_search_options(parser)
    parser.add_argument("--metric", choices=list(PBT_METRICS), help="what PBT ranks members by (see `search --help`)")
    parser.add_argument("--backend", choices=["embedded", "ray"], default="embedded", help="default embedded")
    add_job_options(parser)
    add_ray_options(parser)
    parser.add_argument(
        "--no-report", dest="report", action="store_false", help="the search writes no WORKDIR/report.html at the end"
    )
    parser.add_argument("-o", "--output", type=Path, help="write the script here (default: stdout)")
    parser.add_argument("--submit", action="store_true", help="also submit it with sbatch (needs -o)")


def add_job_options(parser: argparse.ArgumentParser) -> None:
    """What the job asks SLURM for."""
    parser.add_argument("--name", default="autolfads-search", help="job name (default autolfads-search)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes (default 1; more need --backend ray)")
    cpus = parser.add_mutually_exclusive_group(required=True)
    cpus.add_argument("--cpus", type=int, help="CPUs per node (sbatch --cpus-per-task)")
    cpus.add_argument("--exclusive", action="store_true", help="whole nodes: every CPU of each (SLURM_CPUS_ON_NODE)")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per node (sbatch --gres=gpu:N; default 0)")
    parser.add_argument(
        "--mem", dest="memory", metavar="MEM", help="memory per node, e.g. 32G (default: the partition's)"
    )
    parser.add_argument(
        "--time", dest="time_limit", help="time limit, e.g. 24:00:00 or 2-00 (default: the partition's)"
    )
    parser.add_argument("--partition", help="partition (default: the cluster's default one)")
    parser.add_argument("--account", help="account to charge")
    parser.add_argument("--qos", help="quality of service")
    parser.add_argument(
        "--signal-lead",
        dest="signal_lead_s",
        metavar="SECONDS",
        type=int,
        default=300,
        help="seconds before the time limit at which the job stops the search and requeues itself (default 300)",
    )
    parser.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="LINE",
        help="a shell line the job runs first, e.g. 'module load cuda/12.4' (repeatable)",
    )


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    """--backend ray: passed on to `autolfads search --backend ray`, and the head's port."""
    parser.add_argument("--cpus-per-member", type=float, help="Ray: CPUs per member (default 1)")
    parser.add_argument("--gpus-per-member", type=float, help="Ray: GPUs per member, fractions allowed (default 0)")
    parser.add_argument("--members-per-trial", type=int, help="Ray: members per trial (default 1)")
    parser.add_argument("--cpus-per-trial", type=float, help="Ray: CPUs of one trial")
    parser.add_argument("--gpus-per-trial", type=float, help="Ray: GPUs of one trial")
    parser.add_argument(
        "--ray-port", type=int, help="Ray: the head's port and the 3 above it (default: 20000-29999, from the job id)"
    )


def add_ray_wait(kinds: argparse._SubParsersAction) -> None:
    parser = add_command(
        kinds,
        "ray-wait",
        run_ray_wait,
        help="wait until a Ray cluster has N live nodes (the Ray script runs it)",
        description="Wait until the Ray cluster at ADDRESS answers and has --nodes live nodes (the head counts).",
    )
    parser.add_argument("address", help="HOST:PORT of the Ray head")
    parser.add_argument("--nodes", type=int, required=True, help="live nodes to wait for, the head included")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")


def run_slurm_search(args: argparse.Namespace, overrides: list[str]) -> int:
    from ..deploy.slurm import sbatch_script, slurm_command, submit

    settings = slurm_settings(args, overrides)
    if args.submit and args.output is None:
        raise ConfigError("--submit needs -o FILE: the script sbatch runs (kept for resubmitting)")
    if args.submit and slurm_command("sbatch") is None:
        raise ConfigError(
            "--submit: no SLURM on this machine (sbatch is not on PATH); write the script with -o FILE "
            "and run sbatch FILE on the cluster's login node"
        )
    check_against_cluster(settings, args.submit)
    text = sbatch_script(settings)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    write_script(args.output, text)
    print(f"wrote {args.output}", file=sys.stderr)
    if args.submit:
        job = submit(args.output)
        print(f"submitted batch job {job} (its log: {settings.name}-{job}.out in {Path.cwd()})")
    return 0


def check_against_cluster(settings, submit: bool) -> None:
    """The partition and its nodes' CPUs and GPUs, when a cluster answers here; a script that is only written
    (on a machine without SLURM, or whose controller does not answer) gets a note instead."""
    from ..deploy.slurm import SlurmCommandFailed, check_cluster, slurm_command

    if slurm_command("sinfo") is None:
        if submit:
            raise ConfigError("--submit: no SLURM on this machine (sinfo is not on PATH)")
        note("no SLURM here (sinfo is not on PATH): the partition, CPUs and GPUs were not checked against a cluster")
        return
    try:
        check_cluster(settings)
    except SlurmCommandFailed as err:
        if submit:
            raise
        note(f"{err}: the partition, CPUs and GPUs were not checked against a cluster")


def note(text: str) -> None:
    print(f"autolfads: note: {text}", file=sys.stderr)


def slurm_settings(args: argparse.Namespace, overrides: list[str]):
    """The script's settings from the command line, after checking what the job would trip over."""
    from ..deploy.slurm import SlurmSettings

    check_search_inputs(args, overrides)
    if args.backend == "ray" and not args.setup and importlib.util.find_spec("ray") is None:
        raise MissingDependency("--backend ray: Ray is not installed in this environment: pip install 'autolfads[ray]'")
    members = args.members_per_trial or 1
    return SlurmSettings(
        name=args.name,
        population=args.population,
        search_args=tuple(search_arguments(args, overrides)),
        bin_dir=str(executable_folder()),
        backend=args.backend,
        nodes=args.nodes,
        cpus=args.cpus,
        gpus=args.gpus,
        memory=args.memory,
        time_limit=args.time_limit,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        signal_lead_s=args.signal_lead_s,
        setup=tuple(args.setup),
        trial_cpus=args.cpus_per_trial if args.cpus_per_trial is not None else members * (args.cpus_per_member or 1.0),
        trial_gpus=args.gpus_per_trial if args.gpus_per_trial is not None else members * (args.gpus_per_member or 0.0),
        ray_port=args.ray_port,
    )


def check_search_inputs(args: argparse.Namespace, overrides: list[str]) -> None:
    """What `autolfads search` would refuse at the start of the job, refused now: the config and its
    overrides, the search space, the data path, train.device against --gpus, a Ray option without Ray."""
    from ..config import Config, apply_overrides, load_config
    from ..search.space import load_search_space

    config = apply_overrides(load_config(args.config_file) if args.config_file else Config(), overrides)
    if args.search_space:
        load_search_space(args.search_space)
    if args.data is not None and not glob.glob(str(args.data)):
        raise ConfigError(f"--data {args.data}: no such file or folder (the job reads it at {args.data.absolute()})")
    device = config.train.device
    if args.gpus == 0 and device.startswith("cuda"):
        raise ConfigError(f"train.device {device} needs GPUs: give --gpus N (GPUs per node)")
    if args.gpus > 0 and device == "cpu":
        raise ConfigError(f"--gpus {args.gpus} with train.device cpu: the GPUs would idle (use train.device auto)")
    given = [option for option, name in RAY_OPTIONS if getattr(args, name) is not None]
    if args.backend == "embedded" and (given or args.ray_port is not None):
        raise ConfigError(f"{(given or ['--ray-port'])[0]} needs --backend ray")


def search_arguments(args: argparse.Namespace, overrides: list[str]) -> list[tuple[str, ...]]:
    """The `autolfads search` arguments the script runs, an option and its value each: what was given, with
    absolute paths, then the trailing KEY VALUE overrides in pairs."""
    result = [("--workdir", absolute(args.workdir))]
    result += [(option, absolute(getattr(args, name))) for option, name in PATH_OPTIONS if getattr(args, name)]
    options = VALUE_OPTIONS + (RAY_OPTIONS if args.backend == "ray" else ())
    result += [(option, f"{getattr(args, name)}") for option, name in options if getattr(args, name) is not None]
    if not args.report:
        result.append(("--no-report",))
    return result + [tuple(overrides[i : i + 2]) for i in range(0, len(overrides), 2)]


def absolute(path: Path) -> str:
    return str(path.absolute())


def executable_folder() -> Path:
    """The folder of the autolfads executable the job runs: this Python's (a virtual environment's bin), or
    the one on PATH."""
    here = Path(sys.executable).absolute().parent
    if (here / "autolfads").exists():
        return here
    found = shutil.which("autolfads")
    if found is None:
        raise ConfigError("cannot find the autolfads executable for the job; activate its environment in --setup")
    return Path(found).absolute().parent


def write_script(path: Path, text: str) -> None:
    from ..files import write_atomic

    try:
        write_atomic(path, text)
    except OSError as err:
        raise ConfigError(f"{path}: cannot write the script: {err}") from None


def run_ray_wait(args: argparse.Namespace, _: list[str]) -> int:
    from ..deploy.slurm import wait_for_ray

    alive = wait_for_ray(args.address, args.nodes, args.timeout)
    print(f"the Ray cluster at {args.address} has {alive} live nodes")
    return 0
