"""Ray backend scaling: member-epochs/s with 1 vs 2 worker nodes of equal size on a loopback cluster.

A head node with no CPUs (it schedules, never trains) and N worker nodes of `--cpus-per-node` CPUs each
are started with `ray start` on 127.0.0.1; the same search (population, generations) runs on 1 and on 2
workers. Efficiency = (rate with 2 workers / rate with 1) / 2; the target is >= 85% of linear. Every
trial's torch thread count (recorded in ray/members.csv) must equal the CPUs it was given: no
oversubscription. Generation 0 includes the ramps, so one generation of work is large enough to time.

`--compare packing` instead runs the search on 2 worker nodes twice: one member per trial, then
`--members-per-trial K` members per trial (each trial the CPUs of one node): what packing members saves
(fewer trial processes, members trained on one population axis).

`--compare processes` runs the search on 2 worker nodes (with `--members-per-trial K`) twice: with every
report answered PAUSE (a fresh process for every trial each generation, as before trials waited at the
barrier in their process), then as the scheduler does now. Each arm prints its trial processes and the
barrier's mean gap (a generation's last report to the next generation's first training step).

    python benchmarks/ray_scaling.py [--cpus-per-node 1] [--population 4] [--generations 2] [--epochs-per-generation 4]
        [--compare nodes|packing|processes] [--members-per-trial 2]
"""

import argparse
import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from autolfads.config import Config, ModelConfig, TrainConfig
from autolfads.data.synthetic import write_synthetic
from autolfads.search.ray_scheduler import SynchronousPBT
from autolfads.search.results import SearchSettings
from autolfads.search.run import search

RAY = str(Path(sys.executable).with_name("ray"))
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_start(args: list[str], sessions: list[int]) -> None:
    process = subprocess.Popen(
        [RAY, "start", *args],
        env=ENV,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sessions.append(process.pid)
    output, _ = process.communicate(timeout=120)
    if process.returncode != 0:
        raise RuntimeError(output)


def stop(sessions: list[int]) -> None:
    """Kill every process of the sessions this script started (never other Ray instances)."""
    for session in sessions:
        for pid in subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout.split("\n"):
            fields = pid.split()
            if len(fields) == 2 and int(fields[1]) == session:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(fields[0]), signal.SIGKILL)


def run(
    workers: int, members_per_trial: int, args, data_file: Path, workdir: Path, fresh: bool = False
) -> tuple[float, set[str]]:
    """One search; fresh: every report answered PAUSE, so every trial takes a new process each generation."""
    sessions: list[int] = []
    temp_dir = tempfile.mkdtemp(prefix="als")
    port = free_port()
    try:
        ray_start(
            [
                "--head",
                "--port",
                str(port),
                "--num-cpus",
                "0",
                "--node-ip-address",
                "127.0.0.1",
                "--include-dashboard=false",
                "--ray-client-server-port",
                str(free_port()),
                "--temp-dir",
                temp_dir,
            ],
            sessions,
        )
        for _ in range(workers):
            ray_start(["--address", f"127.0.0.1:{port}", "--num-cpus", str(args.cpus_per_node)], sessions)
        os.environ["RAY_AUTH_MODE"] = "disabled"
        config = Config(
            model=ModelConfig(ic_enc_dim=32, ci_enc_dim=32, con_dim=32, co_dim=1, ic_dim=32, gen_dim=64, fac_dim=20),
            train=TrainConfig(batch_size=128, kl_increase_epoch=4, l2_increase_epoch=4),
        )
        settings = SearchSettings(
            population=args.population,
            epochs_per_generation=args.epochs_per_generation,
            max_generations=args.generations,
            backend="ray",
        )
        start = time.perf_counter()
        packing = (
            {}
            if members_per_trial == 1
            else dict(members_per_trial=members_per_trial, cpus_per_trial=args.cpus_per_node)
        )
        with (
            mock.patch.object(SynchronousPBT, "_may_wait", lambda self, trial, group: False)
            if fresh
            else (contextlib.nullcontext())
        ):
            search(config, data_file, workdir, settings, address=f"127.0.0.1:{port}", cpus_per_member=1, **packing)
        elapsed = time.perf_counter() - start
        with open(workdir / "ray" / "members.csv") as f:
            threads = {row["torch_threads"] for row in csv.DictReader(f)}
        return elapsed, threads
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        stop(sessions)
        shutil.rmtree(temp_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--epochs-per-generation", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-ray-scaling"))
    parser.add_argument("--compare", choices=["nodes", "packing", "processes"], default="nodes")
    parser.add_argument("--members-per-trial", type=int, default=2, help="with --compare packing or processes")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    data_file = write_synthetic("lorenz", args.workdir / "lorenz.h5")
    epochs = args.population * (4 + args.epochs_per_generation * args.generations)
    print(
        f"Lorenz set (1040 train trials), population {args.population}, {args.generations} generations x "
        f"{args.epochs_per_generation} epochs (+4 ramp), "
        f"{args.cpus_per_node} CPU(s) per worker node, 1 CPU and 1 torch thread per member; {os.cpu_count()} cores on "
        "this machine"
    )
    # (worker nodes, members per trial, a fresh process per trial each generation) of each arm
    k = args.members_per_trial
    arms = {
        "nodes": [(1, 1, False), (2, 1, False)],
        "packing": [(2, 1, False), (2, k, False)],
        "processes": [(2, k, True), (2, k, False)],
    }[args.compare]
    rates = []
    for workers, members_per_trial, fresh in arms:
        workdir = args.workdir / f"workers-{workers}-members-{members_per_trial}{'-fresh' if fresh else ''}"
        elapsed, threads = run(workers, members_per_trial, args, data_file, workdir, fresh)
        rates.append(epochs / elapsed)
        processes, gap, rss = barrier(workdir)
        arm = f"{workers} worker node(s), {members_per_trial} member(s) per trial"
        print(
            f"{arm}{', a fresh process each generation' if fresh else ''}: {elapsed:.1f} s, {rates[-1]:.2f} "
            f"member-epochs/s; torch threads per trial {sorted(threads)}; {processes} trial processes; "
            f"barrier {gap:.2f} s; peak RSS of a trial process by generation {rss} MiB"
        )
    if args.compare == "nodes":
        print(f"scaling efficiency 1 -> 2 nodes: {rates[1] / rates[0] / 2 * 100:.0f}% of linear (target >= 85%)")
    elif args.compare == "packing":
        print(f"{k} members per trial vs 1: {rates[1] / rates[0]:.2f}x member-epochs/s")
    else:
        print(f"trials waiting in their process vs a fresh process each generation: {rates[1] / rates[0]:.2f}x")


def barrier(workdir: Path) -> tuple[int, float, list[float]]:
    """From ray/reports.jsonl: how many trial processes ran, the mean gap from a generation's last report to
    the next generation's first training step, and the largest peak RSS of a trial process by generation."""
    reports = [json.loads(line) for line in (workdir / "ray" / "reports.jsonl").read_text().splitlines() if line]
    generations = sorted({r["generation"] for r in reports})
    gaps = [
        min(r["started_at"] for r in reports if r["generation"] == g)
        - max(r["time"] for r in reports if r["generation"] == g - 1)
        for g in generations[1:]
    ]
    rss = [round(max(r["peak_rss_mib"] for r in reports if r["generation"] == g)) for g in generations]
    return len({(r["node_id"], r["pid"]) for r in reports}), sum(gaps) / max(1, len(gaps)), rss


if __name__ == "__main__":
    main()
