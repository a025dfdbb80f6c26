"""Training-step throughput (trials/s) on the NLB mc_maze_small shape, one thread by default.

107 held-in / 142 total neurons, 140 -> 180 bins, ic_enc 100, ci_enc 80, con 80, co 4, ic 100, gen 100,
fac 40, batch 64. A step is the full training step: coordinated dropout, forward, loss, backward,
per-member gradient clipping and the Adam update. Random Poisson data. The recurrent cores of
`train.recurrent_core`: manual (hand-written backward, python loops), cpp (the same loops in C++) and autograd
(plain autograd, the reference) are timed alternately in one run.

    python benchmarks/train_throughput.py [--threads 1] [--batch 64] [--steps 10] [--population 1] [--clock wall]
        [--no-cpp]

Memory is set up as the command line does it (huge pages, large blocks back to the OS: autolfads.runtime).
`--clock cpu` times the process's CPU time instead of wall time (one thread: the time it computed, less
disturbed when other jobs share the cores) and prints the median of the rounds next to the best.
"""

import argparse
import os
import statistics
import time

from autolfads.runtime import reuse_freed_memory, use_huge_pages

use_huge_pages()  # as the command line does (before torch allocates)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from autolfads.config import Config, ModelConfig, TrainConfig  # noqa: E402
from autolfads.data.dataset import LFADSData, Split  # noqa: E402
from autolfads.train.trainer import Trainer  # noqa: E402

MC_MAZE_SMALL = dict(
    data_dim=142,
    cs_dim=35,
    seq_len=180,
    fp_len=40,
    ext_input_dim=0,
    ic_enc_dim=100,
    ci_enc_dim=80,
    con_dim=80,
    co_dim=4,
    ic_dim=100,
    gen_dim=100,
    fac_dim=40,
    dropout_rate=0.02,
    cd_rate=0.3,
)


def synthetic_split(name: str, n: int, cfg: ModelConfig, generator: torch.Generator) -> Split:
    recon = torch.poisson(torch.full((n, cfg.recon_seq_len, cfg.recon_dim), 0.2), generator=generator)
    return Split(name, recon[:, : cfg.encod_seq_len, : cfg.encod_dim].clone(), recon, None, None, np.arange(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--population", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per core (after one warm-up)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: process CPU time")
    parser.add_argument(
        "--no-cpp", dest="cpp", action="store_false", help="leave out train.recurrent_core cpp (no compiler)"
    )
    args = parser.parse_args()
    reuse_freed_memory()  # as the command line does
    torch.set_num_threads(args.threads)
    config = Config(model=ModelConfig(**MC_MAZE_SMALL), train=TrainConfig(batch_size=args.batch, device=args.device))
    generator = torch.Generator().manual_seed(0)
    n = args.batch * args.steps
    data = LFADSData(
        None,
        "single",
        synthetic_split("train", n, config.model, generator),
        synthetic_split("valid", args.batch, config.model, generator),
        None,
        None,
    )
    print(f"config: mc_maze_small shape {MC_MAZE_SMALL}")
    print(
        f"torch {torch.__version__}, device {config.train.device}, threads {torch.get_num_threads()}, batch "
        f"{args.batch}, population {args.population}, steps {args.steps}"
    )
    # Fast core and plain autograd alternate epoch by epoch so machine noise hits both alike; best of rounds.
    cores = ["autograd", "manual"] + (["cpp"] if args.cpp else [])
    trainers = {
        core: Trainer(
            config.model_copy(update={"train": config.train.model_copy(update={"recurrent_core": core})}),
            data,
            population=[{}] * args.population,
            member_seeds=range(args.population),
        )
        for core in cores
    }
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"clock: {args.clock}; load average before: {os.getloadavg()}")
    rounds = {core: [] for core in trainers}
    for round_ in range(args.rounds + 1):
        for core, trainer in trainers.items():
            start = clock()
            trainer.train_epoch()
            if round_ > 0:  # round 0 warms up
                rounds[core].append(clock() - start)
    best = {core: min(times) for core, times in rounds.items()}
    print(f"load average after: {os.getloadavg()}")
    for core, elapsed in best.items():
        print(
            f"{core:>8}: step time {elapsed / args.steps * 1000:.1f} ms; throughput {n / elapsed:.1f} trials/s; "
            f"{n * args.population / elapsed:.1f} member-trials/s"
        )
    median = {core: statistics.median(times) for core, times in rounds.items()}
    for core in cores[1:]:
        print(
            f"{core} vs autograd: {best['autograd'] / best[core]:.2f}x (best), "
            f"{median['autograd'] / median[core]:.2f}x (medians: autograd "
            f"{median['autograd'] / args.steps * 1000:.1f} ms, {core} "
            f"{median[core] / args.steps * 1000:.1f} ms per step)"
        )


if __name__ == "__main__":
    main()
