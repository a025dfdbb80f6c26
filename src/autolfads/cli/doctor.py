"""`autolfads doctor`: what this machine offers autolfads, in one screen.

Versions, torch devices, CUDA and Ray availability, which recurrent core training uses (the C++ loops
where they can be built), where a search puts its workers (every CPU core or every visible GPU), and the
thread settings that decide CPU speed. Ray is looked up, not imported (importing it takes seconds); nothing
here changes any setting.
"""

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import sys

from .options import add_command

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def add_doctor(commands: argparse._SubParsersAction) -> None:
    add_command(
        commands,
        "doctor",
        run_doctor,
        help="show versions, devices, Ray and thread settings",
        description="Print versions (python, torch, numpy, ray ...), torch devices, CUDA and Ray availability, "
        "thread settings and the recommended thread setting.",
        epilog="example: autolfads doctor",
    )


def run_doctor(args: argparse.Namespace, _: list[str]) -> int:
    print(machine_report())
    return 0


def machine_report() -> str:
    import torch

    from .. import __version__

    rows = [
        ("autolfads", __version__),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("platform", platform.platform()),
    ]
    rows += [(name, version(name)) for name in ("torch", "numpy", "h5py", "matplotlib", "tensorboard", "ray")]
    cuda = torch.cuda.is_available()
    count = torch.cuda.device_count() if cuda else 0
    devices = ["cpu"] + [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(count)]
    rows.append(("torch devices", ", ".join(devices)))
    built = torch.version.cuda
    no_cuda = f"torch built for CUDA {built}, no GPU visible" if built else "CPU-only torch build"
    rows.append(("CUDA available", "yes" if cuda else f"no ({no_cuda})"))
    rows.append(("Ray", ray_status()))
    rows.append(("recurrent core", core_status(cuda)))
    cores = usable_cores()
    rows.append(("CPU cores", f"{cores} usable of {os.cpu_count()}"))
    threads = f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op"
    rows.append(("torch threads", f"{threads} (autolfads sets intra-op from train.threads)"))
    rows += [(name, os.environ.get(name, "unset")) for name in THREAD_VARIABLES]
    rows.append(("search", search_placement(cores, count)))
    rows.append(("recommended", recommendation(cores, cuda)))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def ray_status() -> str:
    if importlib.util.find_spec("ray") is None:
        return "not installed: pip install 'autolfads[ray]' for --backend ray"
    address = os.environ.get("RAY_ADDRESS")
    return "installed: --backend ray works" + (f"; RAY_ADDRESS={address}" if address else "")


def core_status(cuda: bool) -> str:
    """The recurrent core train.recurrent_core auto (the default) picks here (looked up: building takes half a
    minute)."""
    from ..model.cpp_loops import build_tools_missing

    missing = build_tools_missing()
    if missing:
        return f"manual (python loops; train.recurrent_core auto): cpp cannot be built here: {missing}"
    text = "cpp (C++ loops; train.recurrent_core auto): built at first use, about 40 s once, then cached"
    return text + ("; manual on a GPU" if cuda else "")


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what a container or taskset allows, not the whole machine
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def search_placement(cores: int, gpus: int, population: int = 8) -> str:
    """Where `autolfads search` (embedded, the default population) puts its workers on this machine: the plan
    it will log at start, made by the same function (every visible GPU gets a worker)."""
    from ..search.placement import plan_workers

    plan = plan_workers(population, cores, gpus=tuple(range(gpus)))
    text = f"--population {population} runs {plan.describe()}"
    if gpus > 1:
        text += f"; --gpus 0,1 (or CUDA_VISIBLE_DEVICES) picks GPUs, --workers {2 * gpus} puts 2 workers on each"
    return text


def recommendation(cores: int, cuda: bool) -> str:
    """LFADS-sized recurrent models are latency-bound on a CPU: one thread per model is fastest, and more
    cores are best used by more models at once (benchmarks/RESULTS.md)."""
    text = "OMP_NUM_THREADS=1 and train.threads 1 (the default): small recurrent models run fastest on one thread"
    if cuda:
        return text + "; on a GPU the threads only feed it, so 1 is enough"
    if cores > 1:
        side_by_side = "autolfads search (one worker per core by default, --workers N)"
        return text + f"; use the {cores} cores by training members side by side: {side_by_side}"
    return text
