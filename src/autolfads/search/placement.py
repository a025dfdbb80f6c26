"""Where the embedded search's workers run: pure functions of the machine's CPUs and GPUs, no torch.

`search_gpus` picks the GPUs (every visible one by default, `--gpus` or train.device to choose) and
`plan_workers` splits P members over W workers, the usable CPUs over their torch threads and the workers over
those GPUs. `autolfads doctor` shows the plan for this machine without starting anything.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class WorkerPlan:
    members: tuple[tuple[int, ...], ...]  # the members of each worker (contiguous, balanced)
    threads: tuple[int, ...]  # torch threads of each worker
    cpus: int  # the usable CPUs the plan was made for
    members_per_axis: int | None = None  # a worker trains its members as axes of at most this many (None: one axis)
    devices: tuple[str, ...] = ()  # each worker's torch device, "cpu" or "cuda:N" (empty: every worker on "cpu")

    @property
    def workers(self) -> int:
        return len(self.members)

    def device(self, worker: int) -> str:
        return self.devices[worker] if self.devices else "cpu"

    def describe(self) -> str:
        sizes = sorted({len(m) for m in self.members})
        threads = sorted(set(self.threads))
        axes = "" if self.members_per_axis is None else f", trained as axes of <= {self.members_per_axis} members"
        return (
            f"{sum(map(len, self.members))} members on {self.workers} worker{'s' if self.workers > 1 else ''} "
            f"({'-'.join(map(str, sizes))} members and {'-'.join(map(str, threads))} "
            f"torch thread{'s' if threads != [1] else ''} each; {self.cpus} usable CPUs){axes}, {self._placement()}"
        )

    def _placement(self) -> str:
        """Where the workers run: 'on cpu', 'on cuda:N', or the GPUs with their workers and members each."""
        gpus = sorted({d for d in map(self.device, range(self.workers)) if d != "cpu"}, key=lambda d: int(d[5:]))
        if len(gpus) <= 1:
            return f"on {gpus[0] if gpus else 'cpu'}"
        workers = [[w for w in range(self.workers) if self.device(w) == gpu] for gpu in gpus]
        counts = _span_of([len(ws) for ws in workers])
        members = _span_of([sum(len(self.members[w]) for w in ws) for ws in workers])
        return (
            f"on {len(gpus)} GPUs {', '.join(gpus)} "
            f"({counts} worker{'s' if counts != '1' else ''} and {members} members each)"
        )


def _span_of(values: Sequence[int]) -> str:
    """'3' when all equal, else 'min-max'."""
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's limit, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# Members per population axis on a CPU. Measured (benchmarks/RESULTS.md, "Members per axis", issue 16 item 2), on
# one core with the command line's memory setting (runtime.reuse_freed_memory): one axis of 2, 4 or 8 members
# trains 1.06-1.15x as fast per member as single models, axes of 2 in turn 1.09-1.11x, i.e. the same within the
# noise, while a process then holds only 2 members' activations (it keeps its peak): axes of 2 in turn.
CPU_MEMBERS_PER_AXIS = 2


def members_per_axis(gpu: bool) -> int | None:
    """How many members one population axis holds: all of a worker's on a GPU (one kernel launch for all of
    them fills the device), CPU_MEMBERS_PER_AXIS on a CPU."""
    return None if gpu else CPU_MEMBERS_PER_AXIS


def plan_workers(
    population: int,
    cpus: int,
    workers: int | None = None,
    threads: int | None = None,
    gpus: Sequence[int] = (),
) -> WorkerPlan:
    """workers: default min(population, cpus) on CPU (every core busy, members spread evenly), one per GPU on
    GPUs (one population axis fills a device), at most the population. Worker w runs on gpus[w % len(gpus)]:
    with members split evenly over the workers, every GPU then gets the same number of members, +-1 per
    worker it holds. threads: default the worker's share of the CPUs, so the total never exceeds them
    (oversubscribed threads slow small recurrent models 5-10x). Each worker trains its members as
    population axes of `members_per_axis` members."""
    if workers is None:
        workers = min(population, len(gpus) if gpus else cpus)
    if not 1 <= workers <= population:
        raise ConfigError(f"--workers must be between 1 and the population ({population}), got {workers}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads-per-worker must be >= 1, got {threads}")
    members = tuple(tuple(int(m) for m in part) for part in np.array_split(np.arange(population), workers))
    if threads is None:
        share = [cpus // workers + (1 if w < cpus % workers else 0) for w in range(workers)]
        per_worker = tuple(max(1, s) for s in share)
    else:
        per_worker = (threads,) * workers
    devices = tuple(f"cuda:{gpus[w % len(gpus)]}" for w in range(workers)) if gpus else ()
    return WorkerPlan(members, per_worker, cpus, members_per_axis(bool(gpus)), devices)


def search_gpus(device: str, visible: int, chosen: Sequence[int] | None = None) -> tuple[int, ...]:
    """The GPUs (torch indices) the embedded search's workers run on; empty: the CPU. device: train.device;
    visible: the GPUs torch sees (CUDA_VISIBLE_DEVICES already applied); chosen: --gpus. By default every
    visible GPU ('auto' or 'cuda'), the one of 'cuda:N', none with 'cpu'."""
    if chosen is not None:
        return _chosen_gpus(device, visible, list(chosen))
    if device == "cpu" or (device == "auto" and visible == 0):
        return ()
    index = None if device in ("auto", "cuda") else int(device.split(":")[1])
    if visible == 0 or (index is not None and index >= visible):
        raise ConfigError(f"train.device {device}: torch sees {_gpu_count(visible)}")
    return tuple(range(visible)) if index is None else (index,)


def _chosen_gpus(device: str, visible: int, chosen: list[int]) -> tuple[int, ...]:
    given = ",".join(map(str, chosen))
    if device not in ("auto", "cuda"):
        raise ConfigError(f"--gpus {given} needs train.device auto or cuda, got {device}")
    if not chosen or len(set(chosen)) != len(chosen):
        raise ConfigError(f"--gpus {given}: expected distinct GPU indices, e.g. --gpus 0,2")
    missing = [g for g in chosen if not 0 <= g < visible]
    if missing:
        raise ConfigError(f"--gpus {given}: no GPU {missing[0]}; torch sees {_gpu_count(visible)}")
    return tuple(chosen)


def _gpu_count(visible: int) -> str:
    listed = "no GPU" if visible == 0 else f"{visible} GPU{'s' if visible > 1 else ''} (0-{visible - 1})"
    limit = os.environ.get("CUDA_VISIBLE_DEVICES")
    return listed + (f" with CUDA_VISIBLE_DEVICES={limit}" if limit is not None else "")
