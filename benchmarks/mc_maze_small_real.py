"""Real data: co-smoothing on MC_Maze_Small (the DANDI 000140 test file: 107 units, 100 trials of 700 ms).

    OMP_NUM_THREADS=1 python benchmarks/mc_maze_small_real.py --workdir /tmp/mcs_bench
    OMP_NUM_THREADS=1 python benchmarks/mc_maze_small_real.py --workdir /tmp/mcs_bench \
--only smoothing --smoke  # seconds

`autolfads data nwb` bins the session (5 ms, -250..450 ms around move onset) with a seeded 20% of its units
held out and 20% of its trials for validation; every method predicts the held-out units of the valid trials
from the held-in ones, scored by held-out co-bps (our evaluator, equal to nlb_tools'):
  smoothing + GLM   Gaussian-smoothed held-in spikes -> a Poisson GLM per held-out unit (kernel width and
                    L2 chosen by 3-fold cross-validation on the train trials), NLB's baseline
  LFADS             `autolfads train` with a shipped config (small_session.yaml; mc_maze_small.yaml for comparison)
  AutoLFADS         `autolfads search` from small_session.yaml with examples/search_space_small.yaml, a small
                    population (--search-space to compare the published space)
Prints co-bps and wall time per method (threads: OMP_NUM_THREADS / train.threads 1).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NWB = (
    Path(os.environ.get("AUTOLFADS_SHARED_DATA", ROOT.parent / "shared" / "data"))
    / "sub-Jenkins_ses-small_desc-test_ecephys.nwb"
)
CONFIGS = ROOT / "examples" / "configs"


def autolfads(*args: object) -> None:
    command = [sys.executable, "-m", "autolfads.cli", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")


def co_bps(output: Path, targets: Path) -> float:
    from autolfads.evaluate import evaluate_output, read_targets

    return evaluate_output(output, read_targets(targets))[0]["co-bps"]


def smoothing_glm(data: Path, targets: Path, out: Path, bin_ms: int) -> float:
    """NLB's smoothing baseline; writes its rates as an LFADS output so the same evaluator scores it."""
    from scipy.ndimage import gaussian_filter1d
    from sklearn.linear_model import PoissonRegressor

    with h5py.File(data) as h5:
        splits = {
            name: (
                h5[f"{name}_encod_data"][()].astype(float),
                h5[f"{name}_recon_data"][()].astype(float),
                h5[f"{name}_inds"][()],
            )
            for name in ("train", "valid")
        }
    heldin = splits["train"][0].shape[2]

    def smooth(x: np.ndarray, sd_ms: float) -> np.ndarray:
        return gaussian_filter1d(x, sd_ms / bin_ms, axis=1, mode="nearest")

    def fit_predict(x_fit, y_fit, x_new, alpha):
        # standardised inputs: unscaled smoothed counts (~0.05 per bin) need huge weights that the L2 forbids
        shape = x_new.shape[:2]
        x_fit, x_new = x_fit.reshape(-1, heldin), x_new.reshape(-1, heldin)
        mean, sd = x_fit.mean(axis=0), x_fit.std(axis=0) + 1e-6
        x_fit, x_new_s = (x_fit - mean) / sd, (x_new - mean) / sd
        preds = [
            PoissonRegressor(alpha=alpha, max_iter=500).fit(x_fit, y_fit[..., unit].reshape(-1)).predict(x_new_s)
            for unit in range(y_fit.shape[-1])
        ]
        return np.stack(preds, axis=-1).reshape(*shape, -1)

    encod, recon, _ = splits["train"]
    heldout = recon[..., heldin:]
    folds = np.array_split(np.arange(len(encod)), 3)
    best = None
    for sd in (30, 50, 70):
        smoothed = smooth(encod, sd)
        for alpha in (1e-2, 3e-2, 1e-1):
            nll = 0.0
            for fold in folds:
                fit = np.setdiff1d(np.arange(len(encod)), fold)
                pred = fit_predict(smoothed[fit], heldout[fit], smoothed[fold], alpha)
                nll += float(np.sum(pred - heldout[fold] * np.log(pred)))
            if best is None or nll < best[0]:
                best = (nll, sd, alpha)
    _, sd, alpha = best
    oracle = max(
        ((sd_, a_) for sd_ in (30, 50, 70) for a_ in (1e-2, 3e-2, 1e-1)),
        key=lambda p: _eval_bps(smooth, fit_predict, encod, heldout, splits["valid"], targets, heldin, *p),
    )
    print(
        f"# smoothing, kernel and L2 picked on the eval trials themselves (optimistic): sd {oracle[0]} ms, alpha "
        f"{oracle[1]}: co-bps "
        f"{_eval_bps(smooth, fit_predict, encod, heldout, splits['valid'], targets, heldin, *oracle):.4f}"
    )
    arrays = {}
    for name, (x, _, inds) in splits.items():
        s = smooth(x, sd)
        arrays[f"{name}_rates"] = np.concatenate([s, fit_predict(smooth(encod, sd), heldout, s, alpha)], axis=-1)
        arrays[f"{name}_inds"] = inds
    from autolfads.data.hdf5 import write_lfads_h5

    write_lfads_h5(out, arrays)
    print(f"# smoothing: kernel sd {sd} ms, GLM alpha {alpha} (3-fold CV on the train trials)")
    return co_bps(out, targets)


def _eval_bps(smooth, fit_predict, encod, heldout, valid, targets, heldin, sd, alpha) -> float:
    from autolfads.evaluate import metrics, read_targets

    x = smooth(valid[0], sd)
    return metrics.bits_per_spike(
        fit_predict(smooth(encod, sd), heldout, x, alpha),
        read_targets(targets).arrays["eval_spikes_heldout"].astype(float),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--nwb",
        type=Path,
        default=NWB,
        help="the MC_Maze_Small NWB file (default: $AUTOLFADS_SHARED_DATA or ../shared/data)",
    )
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="held-out units and valid trials")
    parser.add_argument("--population", type=int, default=6)
    parser.add_argument("--epochs-per-generation", type=int, default=20)
    parser.add_argument("--max-generations", type=int, default=8)
    parser.add_argument(
        "--search-space",
        type=Path,
        default=ROOT / "examples" / "search_space_small.yaml",
        help="search space YAML (default: the small-session one)",
    )
    methods = ["smoothing", "lfads", "lfads_old", "search"]
    parser.add_argument("--skip", nargs="*", default=[], choices=methods, help="methods to leave out")
    parser.add_argument("--only", nargs="*", choices=methods, help="run only these methods")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few epochs per model and a 2-member, 2-generation search: checks the pipeline, not the figures",
    )
    args = parser.parse_args()
    if args.only is not None:
        args.skip = [m for m in methods if m not in args.only]
    if args.smoke:
        args.population, args.epochs_per_generation, args.max_generations = 2, 2, 2
    import torch

    print(
        f"# settings: nwb {args.nwb}, workdir {args.workdir}, seed {args.seed}, heldout 20% of units, valid 20% of "
        "trials, 5 ms bins, -250..450 ms around move onset"
    )
    print(
        f"# search: population {args.population}, epochs/generation {args.epochs_per_generation}, max generations "
        f"{args.max_generations}, space {args.search_space}"
    )
    print(
        f"# methods: {[m for m in methods if m not in args.skip]}{' (smoke: few epochs)' if args.smoke else ''}; "
        f"torch {torch.__version__}, OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS')}, train.threads 1, load "
        f"average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    if not args.nwb.is_file():
        raise SystemExit(
            f"{args.nwb} is not here: this benchmark needs the shared MC_Maze_Small file (see ../shared/data/README.md)"
        )
    w = args.workdir
    w.mkdir(parents=True, exist_ok=True)
    data, targets = w / "mc_maze_small.h5", w / "mc_maze_small_targets.h5"
    autolfads(
        "data",
        "nwb",
        "--nwb",
        args.nwb,
        "--align",
        "move_onset_time",
        "--window",
        -250,
        450,
        "--bin-ms",
        5,
        "--heldout-fraction",
        0.2,
        "--valid-fraction",
        0.2,
        "--seed",
        args.seed,
        "--out",
        data,
    )
    cpu = ["train.device", "cpu", "train.threads", "1"]
    if args.smoke:
        cpu += [
            "train.max_epochs",
            "3",
            "train.kl_increase_epoch",
            "1",
            "train.l2_increase_epoch",
            "1",
            "train.num_samples",
            "2",
        ]
    results = {}

    def timed(name: str, run) -> None:
        if name in args.skip:
            return
        start = time.perf_counter()
        score = run()
        results[name] = (score, time.perf_counter() - start)
        print(f"{name}: co-bps {score:.4f}, {results[name][1]:.0f} s", flush=True)

    timed("smoothing", lambda: smoothing_glm(data, targets, w / "smoothing_output.h5", 5))

    def single(config: str, run: str, *extra: str):
        autolfads(
            "train",
            "--data",
            data,
            "--checkpoint",
            w / run,
            "--config-file",
            CONFIGS / config,
            "--output",
            "--quiet",
            "--no-report",
            *cpu,
            *extra,
        )
        return co_bps(w / run / "lfads_output.h5", targets)

    timed("lfads", lambda: single("small_session.yaml", "lfads_small_session"))
    # NLB's config needs this file's shapes: 86 + 21 units, 140 bins, no forward bins
    # (its data.prefix mc_maze_small matches)
    timed(
        "lfads_old",
        lambda: single(
            "mc_maze_small.yaml",
            "lfads_mc_maze_small",
            "model.data_dim",
            "107",
            "model.cs_dim",
            "21",
            "model.seq_len",
            "140",
            "model.fp_len",
            "0",
        ),
    )

    def search():
        autolfads("search", "--data", data, "--config-file", CONFIGS / "small_session.yaml", "--workdir", w / "search",
                  "--population", args.population, "--epochs-per-generation", args.epochs_per_generation,
                  "--max-generations", args.max_generations, "--seed", args.seed, "--no-report",
                  "--search-space", args.search_space, *cpu)  # fmt: skip
        return co_bps(w / "search" / "best_model" / "lfads_output.h5", targets)

    timed("search", search)
    print("\n| method | held-out co-bps | wall s |\n|---|---|---|")
    for name, (score, seconds) in results.items():
        print(f"| {name} | {score:.4f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
