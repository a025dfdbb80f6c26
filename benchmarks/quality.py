"""Model quality side by side, over several seeded splits: smoothing, the shipped single-model configs, the
default AutoLFADS search, a random-search control at the same budget, and the search's population ensemble.

    OMP_NUM_THREADS=1 python benchmarks/quality.py --workdir /tmp/quality                       # everything
    OMP_NUM_THREADS=1 python benchmarks/quality.py --workdir /tmp/quality --dataset nlb-synthetic
    OMP_NUM_THREADS=1 python benchmarks/quality.py --workdir /tmp/q --methods smoothing --splits 0 --smoke

Data sets (`--dataset`):
  mc_maze_small   the real DANDI 000140 MC_Maze_Small test file (107 units, 100 trials; ../shared/data or
                  $AUTOLFADS_SHARED_DATA) through `autolfads data nwb`: 5 ms bins, -250..450 ms around move onset;
                  split s holds out a seeded 20% of the units and 20% of the trials (`--seed s`)
  nlb-synthetic   `autolfads data nlb-synthetic --seed s` (45 + 15 units, 8 conditions x 24 trials, known rates)
                  through `autolfads data nlb --dataset mc_maze --bin-ms 20`: forward bins too, and R^2 to the truth

Held-back test trials: the split's valid trials (20%) are the test set. No model sees them while it trains or
is selected: the models train on the other 80% (`fit.h5`: a seeded fifth of them as their validation trials,
which early stopping, best.ckpt, PBT and the ensemble's k read), and are then sampled on the test trials
(`autolfads sample --data data.h5`). Every method is scored by held-out co-bps on the test trials (our evaluator,
equal to nlb_tools'), and R^2 to the truth where there is one.

Methods (`--methods`):
  smoothing       Gaussian-smoothed held-in spikes -> a Poisson GLM per held-out unit, kernel width and L2 chosen by
                  3-fold CV on the training trials (NLB's baseline); forward bins: the training trials' mean
  default         `autolfads train` with no config file (sized from the data): selected by every neuron and bin
  default_heldin  the same, selected by the held-in neurons only (train.select_metric smth_val_nll_heldin)
  small_session   `autolfads train --config-file examples/configs/small_session.yaml`
  mc_maze_small   `autolfads train --config-file examples/configs/mc_maze_small.yaml` (shapes from the data)
  search          `autolfads search` with its defaults (no config file, no search space)
  random          the same search with --no-exploit: every member keeps its sampled hyperparameters
  ensemble        the search's population ensemble (`autolfads sample --checkpoint <search workdir>/ensemble`)
Single models run `--jobs` at a time (one torch thread each); a search runs alone with its default workers.
Prints a table per split and a summary (mean, standard deviation, min over splits, mean wall time); writes
`results.json` in the workdir. Rerunning skips what a split's folder already holds (delete it to rerun).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NWB = (
    Path(os.environ.get("AUTOLFADS_SHARED_DATA", ROOT.parent / "shared" / "data"))
    / "sub-Jenkins_ses-small_desc-test_ecephys.nwb"
)
CONFIGS = ROOT / "examples" / "configs"
SINGLE = ("default", "default_heldin", "small_session", "mc_maze_small")
METHODS = ("smoothing", *SINGLE, "search", "random", "ensemble")
SMOKE = ["train.max_epochs", "3", "train.kl_increase_epoch", "1", "train.l2_increase_epoch", "1"]


def autolfads(*args: object) -> None:
    command = [sys.executable, "-m", "autolfads.cli", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")


def prepare(dataset: str, nwb: Path, split: int, folder: Path) -> tuple[Path, Path, Path, int]:
    """The split's files (written once) -> (data: train + test trials, fit: the models' train + valid trials,
    targets of the test trials, bin ms)."""
    data, fit, targets = folder / "data.h5", folder / "fit.h5", folder / "data_targets.h5"
    bin_ms = 5 if dataset == "mc_maze_small" else 20
    if not (data.is_file() and targets.is_file()):
        if dataset == "mc_maze_small":
            autolfads("data", "nwb", "--nwb", nwb, "--align", "move_onset_time", "--window", -250, 450,
                      "--bin-ms", bin_ms, "--heldout-fraction", 0.2, "--valid-fraction", 0.2, "--seed", split,
                      "--out", data)  # fmt: skip
        else:
            session = folder / "session.nwb"
            autolfads("data", "nlb-synthetic", "--seed", split, "--out", session)
            autolfads("data", "nlb", "--dataset", "mc_maze", "--nwb", session, "--truth", folder / "session_truth.h5",
                      "--bin-ms", bin_ms, "--out", data, "--targets", targets)  # fmt: skip
    if not fit.is_file():
        write_fit_file(data, fit, np.random.default_rng(split))
    return data, fit, targets, bin_ms


def write_fit_file(data: Path, fit: Path, rng: np.random.Generator) -> None:
    """data's train trials as a file of their own: a seeded fifth of them its valid trials, the rest its train
    trials; data's valid trials (the test set) left out."""
    from autolfads.data.hdf5 import write_lfads_h5

    with h5py.File(data) as h5:
        arrays = {key: h5[key][()] for key in h5}
        attrs = {key: value for key, value in h5.attrs.items() if key != "targets"}  # targets: the test trials'
    order = rng.permutation(len(arrays["train_inds"]))
    valid, train = np.sort(order[: len(order) // 5]), np.sort(order[len(order) // 5 :])
    out = {key: value for key, value in arrays.items() if not key.startswith(("train_", "valid_"))}
    for key, value in arrays.items():
        if key.startswith("train_"):
            out[key], out["valid_" + key.removeprefix("train_")] = value[train], value[valid]
    write_lfads_h5(fit, out, attrs=attrs)


def scores(output: Path, targets: Path, data: Path) -> dict[str, float]:
    """Held-out co-bps (NLB's evaluator) and, where the data file holds true rates, R^2 of the valid rates."""
    from autolfads.evaluate import evaluate_output, read_output_rates, read_targets

    result = {"co-bps": float(evaluate_output(output, read_targets(targets))[0]["co-bps"])}
    with h5py.File(data) as h5:
        if "valid_truth" in h5:
            truth, inds = h5["valid_truth"][()], h5["valid_inds"][()]
            rate_inds, rates = read_output_rates(output)["valid"]
            rates = rates[np.argsort(rate_inds)][np.argsort(np.argsort(inds))]
            result["R2"] = r2(rates[:, : truth.shape[1]], truth)
    return result


def r2(rates: np.ndarray, truth: np.ndarray) -> float:
    """R^2 over every neuron and bin, each neuron's variance weighted as sklearn's 'variance_weighted'."""
    rates, truth = rates.reshape(-1, rates.shape[-1]), truth.reshape(-1, truth.shape[-1])
    return float(1 - ((rates - truth) ** 2).sum() / ((truth - truth.mean(axis=0)) ** 2).sum())


def smoothing_glm(data: Path, out: Path, bin_ms: int) -> None:
    """NLB's smoothing baseline, its kernel and L2 picked by 3-fold CV on the train trials; writes its rates as
    an LFADS output so the same evaluator scores it."""
    from scipy.ndimage import gaussian_filter1d
    from sklearn.linear_model import PoissonRegressor

    from autolfads.data.hdf5 import write_lfads_h5

    with h5py.File(data) as h5:
        arrays = {key: h5[key][()] for key in h5 if key.endswith(("_encod_data", "_recon_data", "_inds"))}
    encod = arrays["train_encod_data"].astype(float)
    heldin, bins = encod.shape[2], encod.shape[1]
    heldout = arrays["train_recon_data"][:, :bins, heldin:].astype(float)
    forward = arrays["train_recon_data"][:, bins:].astype(float).mean(axis=0)

    def smooth(x: np.ndarray, sd_ms: float) -> np.ndarray:
        return gaussian_filter1d(x.astype(float), sd_ms / bin_ms, axis=1, mode="nearest")

    def fit_predict(x_fit, y_fit, x_new, alpha):
        # standardised inputs: unscaled smoothed counts (~0.05 per bin) need huge weights that the L2 forbids
        shape = x_new.shape[:2]
        x_fit, x_new = x_fit.reshape(-1, heldin), x_new.reshape(-1, heldin)
        mean, sd = x_fit.mean(axis=0), x_fit.std(axis=0) + 1e-6
        x_fit, x_new = (x_fit - mean) / sd, (x_new - mean) / sd
        preds = [
            PoissonRegressor(alpha=alpha, max_iter=500).fit(x_fit, y_fit[..., unit].reshape(-1)).predict(x_new)
            for unit in range(y_fit.shape[-1])
        ]
        return np.stack(preds, axis=-1).reshape(*shape, -1)

    folds = np.array_split(np.arange(len(encod)), 3)
    candidates = [(sd, alpha) for sd in (20, 30, 50, 70) for alpha in (1e-2, 3e-2, 1e-1, 3e-1, 1.0)]

    def cv_nll(sd: float, alpha: float) -> float:
        smoothed, nll = smooth(encod, sd), 0.0
        for fold in folds:
            fit = np.setdiff1d(np.arange(len(encod)), fold)
            pred = fit_predict(smoothed[fit], heldout[fit], smoothed[fold], alpha)
            nll += float(np.sum(pred - heldout[fold] * np.log(pred)))
        return nll

    sd, alpha = min(candidates, key=lambda c: cv_nll(*c))
    rates = {}
    for split in ("train", "valid"):
        held_in = smooth(arrays[f"{split}_encod_data"], sd)
        trial = np.concatenate([held_in, fit_predict(smooth(encod, sd), heldout, held_in, alpha)], axis=2)
        full = np.concatenate([trial, np.broadcast_to(forward, (len(trial), *forward.shape))], axis=1)
        rates[f"{split}_rates"] = np.maximum(full, 1e-4)  # silent stretches smooth to 0, which would score as 1e-9
        rates[f"{split}_inds"] = arrays[f"{split}_inds"]
    write_lfads_h5(out, rates)
    print(f"#   smoothing: kernel sd {sd} ms, GLM alpha {alpha} (3-fold CV on the train trials)", flush=True)


def shape_overrides(data: Path) -> list[str]:
    """mc_maze_small.yaml names NLB's shapes; a split of the test file has others."""
    with h5py.File(data) as h5:
        trials, bins, neurons = h5["train_recon_data"].shape
        encod_bins, heldin = h5["train_encod_data"].shape[1:]
    return ["model.data_dim", str(neurons), "model.cs_dim", str(neurons - heldin), "model.seq_len", str(bins),
            "model.fp_len", str(bins - encod_bins)]  # fmt: skip


def on_test_trials(run: Path, data: Path) -> Path:
    """A trained model (or an ensemble folder) sampled on data.h5: its valid rates are the test trials'."""
    output = run / "test_output.h5"
    autolfads("sample", "--checkpoint", run, "--data", data, "--output", output)
    return output


def train_single(method: str, fit: Path, data: Path, folder: Path, extra: list[str]) -> Path:
    run = folder / method
    config = [] if method.startswith("default") else ["--config-file", CONFIGS / f"{method}.yaml"]
    shapes = shape_overrides(fit) if method == "mc_maze_small" else []
    selection = ["train.select_metric", "smth_val_nll_heldin"] if method == "default_heldin" else []
    autolfads("train", "--data", fit, "--checkpoint", run, *config, "--quiet", "--no-report", "train.threads", "1",
              *shapes, *selection, *extra)  # fmt: skip
    return on_test_trials(run, data)


def run_search(method: str, fit: Path, data: Path, folder: Path, split: int, options: list[str], extra: list[str]):
    workdir = folder / method
    control = ["--no-exploit"] if method == "random" else []
    autolfads("search", "--data", fit, "--workdir", workdir, "--seed", split, "--no-report", *control, *options,
              *extra)  # fmt: skip
    return on_test_trials(workdir / "best_model", data)


def run_split(args: argparse.Namespace, split: int) -> dict[str, dict[str, float]]:
    folder = args.workdir / f"split{split}"
    folder.mkdir(parents=True, exist_ok=True)
    data, fit, targets, bin_ms = prepare(args.dataset, args.nwb, split, folder)
    extra = SMOKE if args.smoke else []
    results: dict[str, dict[str, float]] = {}
    done_file, lock = folder / "results.json", threading.Lock()
    if done_file.is_file():
        results = json.loads(done_file.read_text())

    def record(method: str, produce: Callable[[], Path]) -> None:
        if method not in args.methods or method in results:
            return
        start = time.perf_counter()
        output = produce()
        with lock:
            results[method] = {**scores(output, targets, data), "wall_s": time.perf_counter() - start}
            done_file.write_text(json.dumps(results, indent=1) + "\n")
        print(f"  split {split} {method}: " + ", ".join(f"{k} {v:.4g}" for k, v in results[method].items()), flush=True)

    record("smoothing", lambda: (smoothing_glm(data, folder / "smoothing.h5", bin_ms), folder / "smoothing.h5")[1])
    singles = [m for m in SINGLE if m in args.methods and m not in results]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = [pool.submit(record, m, lambda m=m: train_single(m, fit, data, folder, extra)) for m in singles]
    for run in runs:
        run.result()  # a failed run stops the benchmark with its error
    search_options = [*args.search_options.split()]
    if args.smoke:
        search_options += ["--population", "2", "--epochs-per-generation", "2", "--max-generations", "2"]
    for method in ("search", "random"):
        record(method, lambda m=method: run_search(m, fit, data, folder, split, search_options, extra))
    record("ensemble", lambda: on_test_trials(folder / "search" / "ensemble", data))
    return results


def summarise(by_split: dict[int, dict[str, dict[str, float]]]) -> None:
    print("\n| method | held-out co-bps, mean ± sd (min) | per split | R^2 to truth | wall s, mean |")
    print("|---|---|---|---|---|")
    for method in METHODS:
        rows = [r[method] for r in by_split.values() if method in r]
        if not rows:
            continue
        bps = [row["co-bps"] for row in rows]
        spread = f"{statistics.mean(bps):.4f} ± {statistics.stdev(bps) if len(bps) > 1 else 0:.4f} ({min(bps):.4f})"
        r2s = [row["R2"] for row in rows if "R2" in row]
        r2_text = f"{statistics.mean(r2s):.3f}" if r2s else ""
        wall = statistics.mean(row["wall_s"] for row in rows)
        print(f"| {method} | {spread} | {' / '.join(f'{b:.4f}' for b in bps)} | {r2_text} | {wall:.0f} |")


def paired_differences(by_split: dict[int, dict[str, dict[str, float]]]) -> None:
    """Item by item of the comparison the benchmark exists for: each search output against the best shipped
    single-model config (the best by its mean over the splits), the sized default and the random control,
    split by split (the same data and test trials), with the mean and standard deviation of the differences."""
    splits = list(by_split.values())

    def mean_of(method: str) -> float:
        values = [r[method]["co-bps"] for r in splits if method in r]
        return statistics.mean(values) if len(values) == len(splits) else -math.inf

    shipped = max(("small_session", "mc_maze_small"), key=mean_of)
    print("\n| difference in held-out co-bps, split by split | per split | mean ± sd |\n|---|---|---|")
    for method in ("search", "ensemble", "random"):
        for baseline in (shipped, "default", "random", "smoothing"):
            if baseline == method or not all(method in r and baseline in r for r in splits):
                continue
            diffs = [r[method]["co-bps"] - r[baseline]["co-bps"] for r in splits]
            spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
            print(f"| {method} - {baseline} | {' / '.join(f'{d:+.4f}' for d in diffs)} | "
                  f"{statistics.mean(diffs):+.4f} ± {spread:.4f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--dataset", choices=("mc_maze_small", "nlb-synthetic"), default="mc_maze_small")
    parser.add_argument("--nwb", type=Path, default=NWB, help="the MC_Maze_Small NWB (default: ../shared/data)")
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2], help="seeds of the splits")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--jobs", type=int, default=2, help="single models trained at once (one thread each)")
    parser.add_argument("--search-options", default="", help="extra options of both searches, e.g. '--time-budget 10m'")
    parser.add_argument("--smoke", action="store_true", help="a few epochs each: checks the pipeline, not figures")
    args = parser.parse_args()
    if args.dataset == "mc_maze_small" and not args.nwb.is_file():
        raise SystemExit(f"{args.nwb} is not here: this data set needs the shared MC_Maze_Small file")
    import torch

    print(f"# {args.dataset}, splits {args.splits}, methods {args.methods}, jobs {args.jobs} (1 torch thread each), "
          f"search options '{args.search_options}'{' (smoke)' if args.smoke else ''}; torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS')}, load "
          f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    by_split = {split: run_split(args, split) for split in args.splits}
    (args.workdir / "results.json").write_text(json.dumps(by_split, indent=1) + "\n")
    summarise(by_split)
    paired_differences(by_split)


if __name__ == "__main__":
    main()
