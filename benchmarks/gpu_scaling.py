"""One device, three ways to fill it (issue 16, item 6): members on the population axis, separate processes,
and reduced precision.

1. P = 1, 8, 20, 40 members on one Trainer's population axis: epoch time, member-epochs/s, the epoch time
   relative to P = 1 (target on a GPU: a 20-member epoch <= 2x a 1-member epoch) and peak memory (CUDA peak
   allocated; on a CPU the process's peak RSS).
2. P single-member processes sharing the device at once (the older tools' 0.5 GPU per member): member-epochs/s
   of all of them together.
3. TF32 matmuls (CUDA only) and bf16 autocast for the P = 8 population: epoch time, and the validation NLL
   after the same epochs from the same seed vs float32, within --tolerance (relative) or not.

It runs on a CPU as well (the test suite runs it with --shape tiny), so the script is known to work before a
GPU is at hand.

    python benchmarks/gpu_scaling.py [--device cuda] [--populations 1 8 20 40] [--processes 8] [--epochs 2] \
[--shape mc_maze_small]
"""

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import MC_MAZE_SMALL, synthetic_split  # noqa: E402

TINY = dict(
    data_dim=12,
    cs_dim=2,
    seq_len=20,
    fp_len=2,
    ext_input_dim=0,
    ic_enc_dim=8,
    ci_enc_dim=8,
    con_dim=8,
    co_dim=1,
    ic_dim=8,
    gen_dim=16,
    fac_dim=4,
)
SHAPES = {"mc_maze_small": MC_MAZE_SMALL, "tiny": TINY}


def trainer_for(shape: str, population: int, device: str, batch: int, steps: int):
    from autolfads.config import Config, ModelConfig, TrainConfig
    from autolfads.data.dataset import LFADSData
    from autolfads.train.trainer import Trainer

    config = Config(model=ModelConfig(**SHAPES[shape]), train=TrainConfig(batch_size=batch, device=device))
    generator = torch.Generator().manual_seed(0)
    data = LFADSData(
        Path("synthetic"),
        "single",
        synthetic_split("train", batch * steps, config.model, generator),
        synthetic_split("valid", batch, config.model, generator),
        None,
        None,
    )
    return Trainer(config, data, population=[{}] * population, member_seeds=range(population))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_epochs(trainer, epochs: int, precision: str) -> tuple[float, float]:
    """Median epoch seconds after a warm-up epoch, and the members' mean validation NLL at the end."""
    device = trainer.device
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    cast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    seconds = []
    with cast:
        trainer.run_epoch()  # warm-up
        for _ in range(epochs):
            synchronize(device)
            start = time.perf_counter()
            trainer.run_epoch()
            synchronize(device)
            seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)), float(
        np.mean([row["val_nll_heldin"] for row in trainer.history[-trainer.population_size :]])
    )


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace, population: int, precision: str) -> dict:
    if not args.device.startswith("cuda"):
        torch.set_num_threads(1)  # processes side by side on a CPU: one thread each, never oversubscribed
    trainer = trainer_for(args.shape, population, args.device, args.batch, args.steps)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    epoch_s, val_nll = timed_epochs(trainer, args.epochs, precision)
    return {
        "population": population,
        "precision": precision,
        "epoch_s": epoch_s,
        "val_nll": val_nll,
        "peak_mib": peak_memory_mib(trainer.device),
    }


def run_child(args: argparse.Namespace, population: int, precision: str = "fp32", wait: bool = True):
    command = [
        sys.executable,
        __file__,
        "--child",
        str(population),
        precision,
        "--device",
        args.device,
        "--shape",
        args.shape,
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--epochs",
        str(args.epochs),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return finish(process) if wait else process


def finish(process: subprocess.Popen) -> dict:
    out, err = process.communicate()
    if process.returncode != 0:
        return {"error": err.strip().splitlines()[-1] if err.strip() else f"exit {process.returncode}"}
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--populations", type=int, nargs="+", default=[1, 8, 20, 40])
    parser.add_argument("--processes", type=int, default=8, help="single-member processes sharing the device at once")
    parser.add_argument("--precision-population", type=int, default=8)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mc_maze_small")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="training batches per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up)")
    parser.add_argument(
        "--tolerance", type=float, default=0.01, help="relative validation-NLL difference reduced precision may make"
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # POPULATION PRECISION
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args, int(args.child[0]), args.child[1])))
        return
    name = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else (
            f"CPU ({len(os.sched_getaffinity(0))} usable, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
        )
    )
    print(
        f"{args.shape} shape, batch {args.batch}, {args.steps} training batches + 1 validation batch per epoch, "
        f"{args.epochs} timed epochs, {name}, torch {torch.__version__}"
    )

    print("== members on the population axis ==")
    results = [run_child(args, p) for p in args.populations]
    base = next((r for r in results if r.get("population") == 1), None)
    print(f"{'P':>4} {'epoch s':>8} {'member-epochs/s':>16} {'epoch vs P=1':>13} {'peak MiB':>9}")
    for p, r in zip(args.populations, results, strict=True):
        if "error" in r:
            print(f"{p:>4} failed: {r['error']}")
            continue
        relative = f"{r['epoch_s'] / base['epoch_s']:.2f}x" if base and "error" not in base else "-"
        print(f"{p:>4} {r['epoch_s']:>8.3f} {p / r['epoch_s']:>16.2f} {relative:>13} {r['peak_mib']:>9.0f}")

    print(f"== {args.processes} single-member processes sharing the device ==")
    start = time.perf_counter()
    shared = [finish(process) for process in [run_child(args, 1, wait=False) for _ in range(args.processes)]]
    failed = [r["error"] for r in shared if "error" in r]
    if failed:
        print(f"failed: {failed[0]}")
    else:
        print(
            f"member-epochs/s together {sum(1 / r['epoch_s'] for r in shared):.2f} (median epoch "
            f"{np.median([r['epoch_s'] for r in shared]):.3f} s, wall {time.perf_counter() - start:.1f} s with "
            "start-up)"
        )

    print(f"== precision, P = {args.precision_population} (validation NLL within {args.tolerance:.0%} of float32?) ==")
    reference = run_child(args, args.precision_population)
    for precision in ["fp32", *(["tf32"] if args.device.startswith("cuda") else []), "bf16"]:
        r = reference if precision == "fp32" else run_child(args, args.precision_population, precision)
        if "error" in r or "error" in reference:
            print(f"{precision:>5} failed: {r.get('error') or reference.get('error')}")
            continue
        difference = abs(r["val_nll"] - reference["val_nll"]) / abs(reference["val_nll"])
        verdict = "within" if difference <= args.tolerance else "OUTSIDE"
        print(
            f"{precision:>5} epoch {r['epoch_s']:.3f} s ({reference['epoch_s'] / r['epoch_s']:.2f}x fp32), val NLL "
            f"{r['val_nll']:.5f}, {difference:.2%} from fp32: {verdict}"
        )


if __name__ == "__main__":
    main()
