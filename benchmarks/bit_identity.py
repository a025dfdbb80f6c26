"""Is a refactor bit-identical? The same tiny runs with the code of two checkouts, compared byte for byte.

    git worktree add /tmp/before <commit>
    OMP_NUM_THREADS=1 python benchmarks/bit_identity.py /tmp/before . --workdir /tmp/bits

Each checkout's `src/` runs (in this interpreter's environment) a small Lorenz data set, `train` with the
default recurrent core, with the python loops (`--manual-before` / `--manual-after`: the override each checkout
spells it with) and with plain autograd (`--autograd-before` / `--autograd-after`), `sample`, and a 2-member,
2-generation `search` (best model and ensemble). Compared:
the weights of every checkpoint, every array of the output files, metrics.csv and the search's state.csv.
Exit status 0 only when all are identical. About a minute a checkout on one core.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

TINY = ["model.ic_enc_dim", "8", "model.ci_enc_dim", "8", "model.con_dim", "8", "model.co_dim", "2", "model.ic_dim",
        "8", "model.gen_dim", "8", "model.fac_dim", "4", "train.batch_size", "8"]  # fmt: skip
RUNS = ["default", "manual", "autograd"]
CHECKPOINTS = [f"{run}/last.ckpt" for run in RUNS] + ["search/search.ckpt", "search/best_model/last.ckpt"]
OUTPUTS = ["default/lfads_output.h5", "search/best_model/lfads_output.h5", "search/ensemble/lfads_output.h5"]
TABLES = [f"{run}/metrics.csv" for run in RUNS] + ["search/state.csv", "search/metrics.csv"]


def run_all(checkout: Path, out: Path, cores: dict[str, list[str]]) -> None:
    """cores: {"manual": override, "autograd": override}, as this checkout spells them."""
    env = {**os.environ, "PYTHONPATH": str(checkout.resolve() / "src"), "OMP_NUM_THREADS": "1"}

    def autolfads(*args: object) -> None:
        command = [sys.executable, "-m", "autolfads.cli", *map(str, args)]
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"{checkout}: {' '.join(command)}\n{result.stderr[-2000:]}")

    out.mkdir(parents=True)
    data = out / "lorenz.h5"
    autolfads("data", "lorenz", "--out", data, "--n-conditions", 4, "--trials-per-condition", 8, "--n-neurons", 12,
              "--seq-len", 20)  # fmt: skip
    for name, extra in {"default": [], **cores}.items():
        autolfads("train", "--data", data, "--checkpoint", out / name, "--epochs", 4, "--quiet", "--no-report", *TINY,
                  *extra)  # fmt: skip
    autolfads("sample", "--checkpoint", out / "default", "--num-samples", 5)
    autolfads("search", "--data", data, "--workdir", out / "search", "--population", 2, "--epochs-per-generation", 2,
              "--max-generations", 2, "--workers", 1, "--no-report", *TINY)  # fmt: skip


def compare(before: Path, after: Path) -> list[str]:
    """What differs, one line each (empty: bit-identical)."""
    differ = []
    for name in CHECKPOINTS:
        a, b = (torch.load(root / name, weights_only=True)["model"] for root in (before, after))
        if a.keys() != b.keys() or not all(torch.equal(a[key], b[key]) for key in a):
            differ.append(f"{name}: weights")
    for name in OUTPUTS:
        with h5py.File(before / name) as a, h5py.File(after / name) as b:
            if set(a) != set(b) or not all(np.array_equal(a[key][()], b[key][()]) for key in a):
                differ.append(f"{name}: arrays")
    differ += [f"{name}: text" for name in TABLES if (before / name).read_bytes() != (after / name).read_bytes()]
    return differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="checkout with the code before the change")
    parser.add_argument("after", type=Path, help="checkout with the code after it")
    parser.add_argument("--workdir", type=Path, required=True, help="a new folder for both checkouts' runs")
    parser.add_argument("--manual-before", default="train.recurrent_core manual")
    parser.add_argument("--manual-after", default="train.recurrent_core manual")
    parser.add_argument("--autograd-before", default="train.recurrent_core autograd")
    parser.add_argument("--autograd-after", default="train.recurrent_core autograd")
    args = parser.parse_args()
    if args.workdir.exists():
        raise SystemExit(f"{args.workdir} exists: give a new folder")
    print(f"torch {torch.__version__}, OMP_NUM_THREADS 1; before {args.before}, after {args.after}", flush=True)
    for checkout, name in ((args.before, "before"), (args.after, "after")):
        cores = {core: getattr(args, f"{core}_{name}").split() for core in ("manual", "autograd")}
        run_all(checkout, args.workdir / name, cores)
    differ = compare(args.workdir / "before", args.workdir / "after")
    compared = len(CHECKPOINTS) + len(OUTPUTS) + len(TABLES)
    print("\n".join(differ) if differ else f"bit-identical: {compared} files (weights, output arrays, tables)")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
