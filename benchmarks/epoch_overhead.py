"""What a small-data epoch costs beyond its training steps: a full epoch of `autolfads train` against its steps.

The mc_maze_small shape (107 held-in / 142 neurons, 140 -> 180 bins) with 80 train / 20 valid trials of random
Poisson counts, as NLB's MC_Maze_Small gives `autolfads train`. Two trainers alternate in one process, round
by round, so machine noise hits both alike:

  steps   `Trainer.train_epoch`: the epoch's optimizer steps alone
  epoch   `train.run.train_epochs` for the same number of epochs, as the command line runs them: the steps,
          validation, the end-of-epoch rules, the checkpoint, metrics.csv, TensorBoard and the metric lines

and prints the ratio (epoch / steps, best of the rounds and median), then what each extra costs on its own.
The config is the one `autolfads train` sizes for this shape with no config file (autolfads.sizing), or
--config-file's.

    python benchmarks/epoch_overhead.py [--epochs 20] [--rounds 5] [--config-file FILE] [--threads 1] [--clock cpu]

`--clock cpu` times the process's CPU time instead of wall time: on a machine other jobs load, the time this
process computed (checkpoint writes' waits for the disk are then not counted).
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from autolfads.runtime import reuse_freed_memory, use_huge_pages

use_huge_pages()  # as the command line does (before torch allocates)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from autolfads.config import Config, load_config  # noqa: E402
from autolfads.data.dataset import LFADSData, Split  # noqa: E402
from autolfads.sizing import DataShape, config_for_data, describe_sizing  # noqa: E402
from autolfads.train.checkpoint import save_checkpoint  # noqa: E402
from autolfads.train.records import RunLog, TensorBoard, write_csv  # noqa: E402
from autolfads.train.run import train_epochs  # noqa: E402
from autolfads.train.trainer import Trainer  # noqa: E402

SHAPE = DataShape(train_trials=80, heldin=107, heldout=35, bins=140, forward_bins=40)
VALID_TRIALS = 20


def synthetic_split(name: str, n: int, generator: torch.Generator) -> Split:
    neurons, bins = SHAPE.neurons, SHAPE.bins + SHAPE.forward_bins
    recon = torch.poisson(torch.full((n, bins, neurons), 0.2), generator=generator)
    return Split(name, recon[:, : SHAPE.bins, : SHAPE.heldin].clone(), recon, None, None, np.arange(n))


def resolved(config: Config) -> Config:
    dims = dict(data_dim=SHAPE.neurons, cs_dim=SHAPE.heldout, seq_len=SHAPE.bins + SHAPE.forward_bins)
    dims |= dict(fp_len=SHAPE.forward_bins, ext_input_dim=0)
    return config.model_copy(update={"model": config.model.model_copy(update=dims)})


def timed(clock, work) -> float:
    start = clock()
    work()
    return clock() - start


def parts(trainer: Trainer, config: Config, folder: Path, clock, repeats: int = 5) -> dict[str, float]:
    """Mean seconds of each extra an epoch of train_epochs adds to the steps."""
    payload = lambda: {**trainer.population_state().to_dict(), "config": config.to_dict()}  # noqa: E731
    writer = TensorBoard(folder / "tb-parts")
    costs = {
        "validation (evaluate valid)": lambda: trainer.evaluate("valid"),
        "checkpoint (last.ckpt)": lambda: save_checkpoint(payload(), folder / "part.ckpt"),
        "metrics.csv": lambda: write_csv(folder / "part.csv", trainer.history),
        "TensorBoard row": lambda: writer.add(trainer.history[-1]),
    }
    means = {name: statistics.mean(timed(clock, work) for _ in range(repeats)) for name, work in costs.items()}
    writer.close()
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="epochs per round and arm")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up)")
    parser.add_argument("--config-file", type=Path, help="default: the config sized from this shape")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: process CPU time")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    reuse_freed_memory()  # as the command line does
    torch.set_num_threads(args.threads)
    base = load_config(args.config_file) if args.config_file else config_for_data(SHAPE)
    config = resolved(base.model_copy(update={"train": base.train.model_copy(update={"threads": args.threads})}))
    generator = torch.Generator().manual_seed(0)
    data = LFADSData(
        Path("synthetic.h5"),
        "single",
        synthetic_split("train", SHAPE.train_trials, generator),
        synthetic_split("valid", VALID_TRIALS, generator),
        None,
        None,
    )
    steps_arm, epoch_arm = Trainer(config, data), Trainer(config, data)
    print(args.config_file or describe_sizing(SHAPE, config))
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, core {steps_arm.core}, batch "
        f"{config.train.batch_size}, {SHAPE.train_trials} train / {VALID_TRIALS} valid trials, {args.epochs} epochs "
        f"a round; clock {args.clock}; load average before: {os.getloadavg()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log = RunLog(folder / "train.log")
        times: dict[str, list[float]] = {"steps": [], "epoch": []}

        def train_steps() -> None:
            for _ in range(args.epochs):
                steps_arm.train_epoch()
                steps_arm.epoch += 1  # the ramps move on as in a run

        def full_epochs() -> None:
            target = epoch_arm.epoch + args.epochs
            train_epochs(epoch_arm, config, folder, target, until_stopped=False, echo=lambda _: None, log=log)

        for round_ in range(args.rounds + 1):
            for name, work in (("steps", train_steps), ("epoch", full_epochs)):
                elapsed = timed(clock, work)
                if round_ > 0:  # round 0 warms up
                    times[name].append(elapsed / args.epochs)
        costs = parts(epoch_arm, config, folder, clock)
    print(f"load average after: {os.getloadavg()}")
    best = {name: min(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    for name in times:
        print(f"{name:>5}: {best[name] * 1000:.1f} ms an epoch (median {median[name] * 1000:.1f} ms)")
    print(
        f"epoch / steps: {best['epoch'] / best['steps']:.3f} (best), {median['epoch'] / median['steps']:.3f} (medians)"
    )
    for name, seconds in costs.items():
        print(f"  {name}: {seconds * 1000:.1f} ms ({seconds / median['steps'] * 100:.1f}% of the steps' median)")


if __name__ == "__main__":
    main()
