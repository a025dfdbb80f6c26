"""Posterior sampling throughput (trials/s at 50 samples) and its memory bound.

The mc_maze_small-shaped model (see train_throughput.py) samples `--trials` trials; the peak memory of
the sampling itself (RSS growth; CUDA peak allocated on a GPU) is printed for two data sizes: it depends
on the chunk size (`max_rows` decoded rows at a time), not on the number of trials.

    python benchmarks/sampling.py [--device cpu] [--threads 1] [--trials 128 512] [--samples 50]
"""

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import MC_MAZE_SMALL, synthetic_split  # noqa: E402

from autolfads.config import ModelConfig  # noqa: E402
from autolfads.model import LFADS  # noqa: E402
from autolfads.train.output import posterior_sample  # noqa: E402


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trials", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--max-rows", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = ModelConfig(**MC_MAZE_SMALL)
    model = LFADS(cfg, [0], device)
    generator = torch.Generator().manual_seed(0)
    print(
        f"mc_maze_small shape, {args.samples} samples, max_rows {args.max_rows}, device {device}, threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}"
    )
    posterior_sample(model, synthetic_split("warmup", 8, cfg, generator), args.samples, args.max_rows)
    for trials in args.trials:
        split = synthetic_split("valid", trials, cfg, generator)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        before = peak_mib(device)
        start = time.perf_counter()
        posterior_sample(model, split, args.samples, args.max_rows)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        growth = peak_mib(device) - (0 if device.type == "cuda" else before)
        print(
            f"{trials:>5} trials: {trials / elapsed:7.1f} trials/s ({trials * args.samples / elapsed:8.0f} decoded "
            f"samples/s); peak memory {'allocated' if device.type == 'cuda' else 'RSS growth'} {growth:.0f} MiB"
        )


if __name__ == "__main__":
    main()
