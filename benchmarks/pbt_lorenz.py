"""AutoLFADS on the default Lorenz set: search quality, population throughput and PBT overhead.

Side by side, in one run, with threads, population and config printed:
 1. rate R^2 (valid trials, 50-sample posterior) of the best member after an embedded search of
    population P vs a single model with the config's default hyperparameters trained for the same
    number of epochs;
 2. embedded population throughput (member-epochs/s) vs the same P members trained one after another;
 3. the per-generation overhead of the search (exploit, checkpoint, tables) as a fraction of its time.

    python benchmarks/pbt_lorenz.py [--population 8] [--epochs-per-generation 10] [--generations 8] [--threads 1]
"""

import argparse
import contextlib
import functools
import time
from pathlib import Path

import h5py
import torch

from autolfads.config import apply_overrides, load_config
from autolfads.data.dataset import load_data
from autolfads.data.synthetic import write_synthetic
from autolfads.search import finish
from autolfads.search.results import SearchSettings
from autolfads.search.run import search
from autolfads.train.metrics import r2_score
from autolfads.train.run import load_run_data, train
from autolfads.train.trainer import Trainer

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "configs" / "lorenz.yaml"


@contextlib.contextmanager
def timed(owner, name: str, timers: dict, key: str):
    """Add the time spent in owner.name to timers[key] while the block runs."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            timers[key] += time.perf_counter() - start

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def valid_r2(output: Path, data_file: Path) -> float:
    with h5py.File(output) as f:
        rates = torch.from_numpy(f["valid_rates"][()])[None]
    return float(r2_score(rates, load_data(data_file).valid.truth))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-pbt"))
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--epochs-per-generation", type=int, default=10)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--ramp", type=int, default=20, help="KL/L2 ramp epochs (the burn-in generation adds them)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--throughput-epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_file = write_synthetic("lorenz", args.workdir / "lorenz.h5")
    config = apply_overrides(
        load_config(CONFIG),
        [
            "train.threads",
            str(args.threads),
            "train.kl_increase_epoch",
            str(args.ramp),
            "train.l2_increase_epoch",
            str(args.ramp),
            "train.patience",
            "100000",
        ],
    )
    total_epochs = args.ramp + args.epochs_per_generation * args.generations
    print(
        f"config: {CONFIG.name}, ramps {args.ramp}; population {args.population}, {args.generations} generations x "
        f"{args.epochs_per_generation} epochs (+ramp) = {total_epochs} epochs"
    )
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {config.train.batch_size}")

    # 1. quality: search vs a default single model, same epochs
    settings = SearchSettings(
        population=args.population, epochs_per_generation=args.epochs_per_generation, max_generations=args.generations
    )
    timers = {"epochs": 0.0, "final output": 0.0}
    start = time.perf_counter()
    with timed(Trainer, "run_epoch", timers, "epochs"), timed(finish, "write_best_model", timers, "final output"):
        outcome = search(config, data_file, args.workdir / "search", settings)
    search_time = time.perf_counter() - start
    single_config = apply_overrides(config, ["train.max_epochs", str(total_epochs)])
    start = time.perf_counter()
    single = train(single_config, data_file, args.workdir / "single", write_outputs=True, echo=None)
    single_time = time.perf_counter() - start
    print(
        f"[1] rate R^2 on valid: search best member {valid_r2(outcome.outputs[0], data_file):.4f} "
        f"({outcome.generations} generations, {search_time / 60:.1f} min) "
        f"vs default single model {valid_r2(single.outputs[0], data_file):.4f} ({single.epochs} epochs, "
        f"{single_time / 60:.1f} min)"
    )

    # 2. throughput: the population on its axis vs the same members one after another
    resolved, data = load_run_data(config, data_file)
    population = Trainer(resolved, data, population=[{}] * args.population, member_seeds=range(args.population))
    population.run_epoch()  # warm-up
    start = time.perf_counter()
    for _ in range(args.throughput_epochs):
        population.run_epoch()
    together = args.population * args.throughput_epochs / (time.perf_counter() - start)
    alone_time = 0.0
    for member in range(args.population):
        one = Trainer(resolved, data, member_seeds=[member])
        one.run_epoch()
        start = time.perf_counter()
        for _ in range(args.throughput_epochs):
            one.run_epoch()
        alone_time += time.perf_counter() - start
    alone = args.population * args.throughput_epochs / alone_time
    print(
        f"[2] member-epochs/s: population of {args.population} in one process {together:.2f} vs one after another "
        f"{alone:.2f} (ratio {together / alone:.2f}x)"
    )

    # 3. overhead: the search's time outside its epochs and outside the final output (exploits, checkpoints,
    # tables, set-up), timed inside the search run of [1]
    generations_time = search_time - timers["final output"]
    overhead = generations_time - timers["epochs"]
    print(
        f"[3] per-generation overhead (exploit, checkpoint, tables, set-up): {overhead:.1f} s = "
        f"{overhead / generations_time * 100:.1f}% "
        f"of the generations' {generations_time:.0f} s (target <= 5%); final best-model output "
        f"{timers['final output']:.0f} s"
    )


if __name__ == "__main__":
    main()
