"""Population throughput and memory: P members on the population axis vs P separate single-model runs.

For each P, a fresh process builds a P-member Trainer on the mc_maze_small shape (see train_throughput.py),
warms up, times training epochs of `--steps` batches and reports member-epochs/s, the ratio to P single
models run one after another (P x the P = 1 epoch time, measured in the same run) and peak memory per
member (RSS above the process's baseline; CUDA peak allocated memory on a GPU). `--generations` also runs
that many short epochs and prints the RSS after each: it must stay flat.

`--huge-pages off on` runs every P both without and with transparent huge pages for large tensors (the
command line turns them on: autolfads.runtime.use_huge_pages).

    python benchmarks/population.py [--populations 1 4 8 20] [--device cpu] [--threads 1] [--steps 2] \
[--huge-pages off on]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import MC_MAZE_SMALL, synthetic_split  # noqa: E402

from autolfads.runtime import HUGE_PAGES_VARIABLE  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def measure(population: int, device: str, threads: int, steps: int, batch: int, generations: int) -> dict:
    from autolfads.config import Config, ModelConfig, TrainConfig
    from autolfads.data.dataset import LFADSData
    from autolfads.runtime import reuse_freed_memory
    from autolfads.train.trainer import Trainer

    torch.set_num_threads(threads)
    reuse_freed_memory()  # as the command line does
    config = Config(model=ModelConfig(**MC_MAZE_SMALL), train=TrainConfig(batch_size=batch, device=device))
    generator = torch.Generator().manual_seed(0)
    data = LFADSData(
        Path("synthetic"),
        "single",
        synthetic_split("train", batch * steps, config.model, generator),
        synthetic_split("valid", batch, config.model, generator),
        None,
        None,
    )
    baseline = rss_mib()
    trainer = Trainer(config, data, population=[{}] * population, member_seeds=range(population))
    trainer.train_epoch()  # warm-up
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train_epoch()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    epoch_s = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"population": population, "epoch_s": epoch_s, "rss_per_member_mib": (peak_rss - baseline) / population}
    if trainer.device.type == "cuda":
        result["gpu_per_member_mib"] = torch.cuda.max_memory_allocated() / 2**20 / population
    result["rss_by_generation_mib"] = []
    for _ in range(generations):
        trainer.run_epoch()
        state = trainer.population_state()  # an exploit, as a search does between generations
        state.copy_member(0, population - 1)
        trainer.load_population_state(state)
        result["rss_by_generation_mib"].append(round(rss_mib(), 1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--populations", type=int, nargs="+", default=[1, 4, 8, 20])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="batches per timed epoch")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--generations", type=int, default=5, help="epochs + exploits after timing, RSS after each")
    parser.add_argument(
        "--huge-pages",
        nargs="+",
        choices=["on", "off"],
        default=["on"],
        help="PyTorch's THP_MEM_ALLOC_ENABLE for the runs (on: as the command line sets it); 'off on' compares",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.device, args.threads, args.steps, args.batch, args.generations)))
        return
    print(
        f"mc_maze_small shape, batch {args.batch}, {args.steps} steps per epoch, device {args.device}, threads "
        f"{args.threads}, torch {torch.__version__}"
    )
    results = []
    for population in args.populations:
        for huge_pages in args.huge_pages:  # side by side, each in a fresh process (PyTorch reads the variable once)
            command = [
                sys.executable,
                __file__,
                "--child",
                str(population),
                "--device",
                args.device,
                "--threads",
                str(args.threads),
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
                "--generations",
                str(args.generations),
            ]
            env = {**os.environ, HUGE_PAGES_VARIABLE: "1" if huge_pages == "on" else "0"}
            result = json.loads(
                subprocess.run(command, check=True, capture_output=True, text=True, env=env)
                .stdout.strip()
                .splitlines()[-1]
            )
            results.append({**result, "huge_pages": huge_pages})
    print(
        f"{'P':>3} {'THP':>4} {'epoch s':>8} {'member-epochs/s':>16} {'vs P single runs':>17} {'RSS/member MiB':>15} "
        f"{'GPU/member MiB':>15}  RSS over {args.generations} generations (MiB)"
    )
    for r in results:
        single = next(
            (s["epoch_s"] for s in results if s["population"] == 1 and s["huge_pages"] == r["huge_pages"]), None
        )
        ratio = f"{single * r['population'] / r['epoch_s']:.2f}x" if single else "-"
        gpu = f"{r['gpu_per_member_mib']:.0f}" if "gpu_per_member_mib" in r else "-"
        print(
            f"{r['population']:>3} {r['huge_pages']:>4} {r['epoch_s']:>8.2f} {r['population'] / r['epoch_s']:>16.2f} "
            f"{ratio:>17} {r['rss_per_member_mib']:>15.0f} {gpu:>15}  {r['rss_by_generation_mib']}"
        )


if __name__ == "__main__":
    main()
