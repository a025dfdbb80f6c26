"""The embedded search's executor: P members on W workers vs C one-core single models (issue 16, item 1).

Every arm runs in a fresh process, on the mc_maze_small shape (train_throughput.py), with the executor the
search uses (search.placement.plan_workers, search.workers.InProcessWorkers / ProcessWorkers) and the driver's steps
between generations (join the slices, an exploit, send the slices back); checkpoints and tables are the
same for every arm and left out. The baseline is one single model on one thread (P = 1, W = 1, 1 thread).
Arms alternate in rounds (the machine's load changes over minutes); each arm's figure is its median.

Printed per arm: member-epochs/s and its ratio to C x the single model's (C = usable CPUs; the target is
>= 0.9 on a quiet machine), the threads per worker, and the RSS (driver + workers) after each generation,
which must stay flat (item 7). The load average is printed before and after.

    python benchmarks/search_scaling.py [--populations 2 4 8] [--workers 1 2] [--threads auto] [--steps 2] \
[--batch 64] [--generations 3] [--rounds 2]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import MC_MAZE_SMALL  # noqa: E402


def rss_mib(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def write_data(path: Path, trials: int, valid: int) -> Path:
    """Poisson counts of the mc_maze_small shape (every neuron and bin, the single layout)."""
    from autolfads.config import ModelConfig
    from autolfads.data.hdf5 import write_lfads_h5

    cfg = ModelConfig(**MC_MAZE_SMALL)
    rng = np.random.default_rng(0)
    shape = (cfg.recon_seq_len, cfg.recon_dim)
    arrays = {
        "train_data": rng.poisson(0.2, (trials, *shape)).astype(np.float32),
        "valid_data": rng.poisson(0.2, (valid, *shape)).astype(np.float32),
    }
    return write_lfads_h5(path, arrays)


def measure(data_path: Path, population: int, workers: int, threads: int | None, batch: int, generations: int) -> dict:
    from autolfads.config import Config, ModelConfig, TrainConfig
    from autolfads.runtime import reuse_freed_memory
    from autolfads.search.placement import plan_workers, usable_cpus
    from autolfads.search.workers import InProcessWorkers, ProcessWorkers
    from autolfads.train.population_state import PopulationState
    from autolfads.train.run import load_run_data

    reuse_freed_memory()  # as the command line does
    model = {key: value for key, value in MC_MAZE_SMALL.items() if key not in ("data_dim", "seq_len", "ext_input_dim")}
    config, data = load_run_data(
        Config(model=ModelConfig(**model), train=TrainConfig(batch_size=batch, device="cpu")), data_path
    )
    plan = plan_workers(population, usable_cpus(), workers, threads)
    pool = (InProcessWorkers if plan.workers == 1 else ProcessWorkers)(
        plan, config, data, [{}] * population, list(range(population)), log=lambda line: None
    )

    def rss_total() -> float:
        return rss_mib() + sum(rss_mib(p.pid) for p in getattr(pool, "processes", []))

    def generation() -> float:
        start = time.perf_counter()
        state = PopulationState.join(pool.train(1, nlb=False, on_epoch=lambda done, total: None), plan.members)
        state.copy_member(0, population - 1)  # an exploit, as the driver makes them
        pool.load([state.without_history().select(members) for members in plan.members])
        return time.perf_counter() - start

    try:
        generation()  # warm-up
        seconds, rss = [], []
        for _ in range(generations):
            seconds.append(generation())
            rss.append(round(rss_total()))
    finally:
        pool.close()
    return {
        "population": population,
        "workers": plan.workers,
        "threads": list(plan.threads),
        "epoch_s": statistics.median(seconds),
        "rss_mib": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--populations", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=2, help="training batches per epoch")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--generations", type=int, default=3, help="timed one-epoch generations per arm (after a warm-up)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="times every arm runs, alternating")
    parser.add_argument(
        "--threads",
        default="auto",
        help="torch threads per worker of the population arms: auto (the search's default, the CPU share) or a number",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)  # DATA P W THREADS
    args = parser.parse_args()
    if args.child is not None:
        data, population, workers, threads = args.child
        print(
            json.dumps(
                measure(
                    Path(data),
                    int(population),
                    int(workers),
                    int(threads) if threads != "auto" else None,
                    args.batch,
                    args.generations,
                )
            )
        )
        return
    from autolfads.search.workers import usable_cpus

    cpus = usable_cpus()
    print(
        f"mc_maze_small shape, batch {args.batch}, {args.steps} training batches + 1 validation batch per epoch, "
        f"{cpus} usable CPUs, torch {torch.__version__}"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    arms = [(1, 1, "1")] + [(p, w, args.threads) for p in args.populations for w in args.workers if w <= p]
    results: dict[tuple, list[dict]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory() as folder:
        data = write_data(Path(folder) / "mc_maze_small_shape.h5", args.batch * args.steps, args.batch)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for round_ in range(1, args.rounds + 1):
            for arm in arms:
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    str(data),
                    *map(str, arm),
                    "--batch",
                    str(args.batch),
                    "--generations",
                    str(args.generations),
                ]
                out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
                result = json.loads(out.strip().splitlines()[-1])
                results[arm].append(result)
                # as it goes, so a run cut short still tells something
                print(
                    f"round {round_}: P {arm[0]}, W {result['workers']}, threads {result['threads']}: epoch "
                    f"{result['epoch_s']:.2f} s, RSS {result['rss_mib']} MiB, load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    single = cpus * 1 / statistics.median(r["epoch_s"] for r in results[arms[0]])
    print(
        f"{'P':>3} {'W':>3} {'threads':>8} {'epoch s':>8} {'member-epochs/s':>16} {'vs C x single':>14}  RSS MiB "
        "after each generation (driver + workers)"
    )
    for arm, runs in results.items():
        epoch_s = statistics.median(r["epoch_s"] for r in runs)
        throughput = arm[0] / epoch_s
        label = "single" if arm == arms[0] else f"{throughput / single:.2f}x"
        print(
            f"{arm[0]:>3} {runs[0]['workers']:>3} {'+'.join(map(str, runs[0]['threads'])):>8} {epoch_s:>8.2f} "
            f"{throughput:>16.2f} {label:>14}  {runs[-1]['rss_mib']}"
        )
    print(f"C x single = {cpus} x {single / cpus:.2f} = {single:.2f} member-epochs/s")


if __name__ == "__main__":
    main()
