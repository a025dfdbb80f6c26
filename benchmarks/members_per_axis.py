"""Members per population axis on one core (issue 16, item 2): k members on one axis, as axes of m members
trained in turn (what a CPU search worker does: search.workers.members_per_axis), and as k single models.

One process, one thread by default, the mc_maze_small shape of train_throughput.py (batch 64, `--steps`
training batches per epoch: coordinated dropout, forward, loss, backward, clipping, Adam). Every arm is a
list of Trainers (members split by search.workers.axis_groups) whose training epochs run one after another;
the arms alternate round by round so the machine's load hits them alike, and each arm's figure is its median
epoch over the rounds. Printed: member-epochs/s and the ratio to k single models (>= 1.0: the axis pays for
itself), the threads and the load average before and after.

    python benchmarks/members_per_axis.py [--members 2 4 8] [--per-axis 0 2] [--steps 2] [--rounds 5] [--threads 1]

`--per-axis 0` is every member on one axis; the single models are always measured.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from autolfads.runtime import use_huge_pages

use_huge_pages()  # as the command line does (before torch allocates)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import MC_MAZE_SMALL, synthetic_split  # noqa: E402

from autolfads.config import Config, ModelConfig, TrainConfig  # noqa: E402
from autolfads.data.dataset import LFADSData  # noqa: E402
from autolfads.runtime import reuse_freed_memory  # noqa: E402
from autolfads.search.workers import axis_groups  # noqa: E402
from autolfads.train.trainer import Trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--per-axis", type=int, nargs="+", default=[0, 2], help="0: every member on one axis")
    parser.add_argument("--steps", type=int, default=2, help="training batches per epoch")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reuse_freed_memory()
    config = Config(model=ModelConfig(**MC_MAZE_SMALL), train=TrainConfig(batch_size=args.batch))
    generator = torch.Generator().manual_seed(0)
    data = LFADSData(
        None,
        "single",
        synthetic_split("train", args.batch * args.steps, config.model, generator),
        synthetic_split("valid", args.batch, config.model, generator),
        None,
        None,
    )
    print(f"load average before: {os.getloadavg()}")
    print(
        f"mc_maze_small shape, batch {args.batch}, {args.steps} training batches per epoch, threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}, {args.rounds} rounds (median)"
    )
    arms: dict[tuple[int, int], list[Trainer]] = {}
    for k in args.members:
        for per_axis in [*args.per_axis, 1]:
            size = min(per_axis or k, k)
            if (k, size) not in arms:
                groups = axis_groups(k, size)
                arms[k, size] = [Trainer(config, data, population=[{}] * len(g), member_seeds=g) for g in groups]
    times: dict[tuple[int, int], list[float]] = {arm: [] for arm in arms}
    for round_ in range(args.rounds + 1):
        for arm, trainers in arms.items():
            start = time.perf_counter()
            for trainer in trainers:
                trainer.train_epoch()
            if round_ > 0:  # round 0 warms up
                times[arm].append(time.perf_counter() - start)
    print(f"load average after: {os.getloadavg()}")
    print(f"{'k':>3} {'arm':>22} {'epoch s':>8} {'member-epochs/s':>16} {'vs k singles':>13}  epochs s (rounds)")
    for (k, size), elapsed in times.items():
        median, single = statistics.median(elapsed), statistics.median(times[k, 1])
        arm = "k single models" if size == 1 else "one axis" if size == k else f"axes of {size}"
        print(
            f"{k:>3} {arm:>22} {median:>8.2f} {k / median:>16.2f} {single / median:>12.2f}x  "
            + ", ".join(f"{t:.2f}" for t in elapsed)
        )


if __name__ == "__main__":
    main()
