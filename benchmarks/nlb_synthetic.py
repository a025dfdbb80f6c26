"""NLB metrics on the synthetic NLB session: smoothing baseline, LFADS, AutoLFADS and the true rates, side by side.

Writes a synthetic session (`autolfads data nlb-synthetic`), prepares it as mc_maze at 20 ms bins (`autolfads data
nlb --truth`) and scores the 'val' trials with NLB's metrics (co-bps, vel R2, psth R2, fp-bps):
  (a) smoothing: held-in spikes smoothed with a Gaussian (50 ms s.d.) are the held-in rates; a Poisson GLM per
      held-out neuron maps them to held-out rates (NLB's baseline); forward bins: each neuron's train-trial mean
      per forward bin (the baseline has no dynamics to predict with);
  (b) LFADS: the package's default hyperparameters (`autolfads train` with no config), training capped at
      --max-epochs, 50-sample posterior rates of the best checkpoint;
  (c) AutoLFADS: an embedded PBT search over the published space, ranked by the smoothed validation NLL;
  (d) truth: the true rates, the ceiling (psth R2 stays below 1: NLB's PSTHs are smoothed spike averages).

    python benchmarks/nlb_synthetic.py [--workdir runs/bench-nlb] [--threads 1] [--max-epochs 300] [--population 4]
"""

import argparse
import json
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from sklearn.linear_model import PoissonRegressor

from autolfads.config import Config, apply_overrides
from autolfads.data.nlb import prepare_nlb
from autolfads.data.nlb_synthetic import write_nlb_synthetic
from autolfads.evaluate import evaluate_output, format_table, read_targets, score, submission_from_rates
from autolfads.search.results import SearchSettings
from autolfads.search.run import search
from autolfads.train.run import train

BIN_MS = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-nlb"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--trials-per-condition", type=int, default=40, help="8 conditions; 70%% train, 15%% val, 15%% test"
    )
    parser.add_argument(
        "--max-epochs", type=int, default=300, help="cap on LFADS training (the default config allows 500)"
    )
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--epochs-per-generation", type=int, default=20)
    parser.add_argument("--max-generations", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()

    nwb, truth = write_nlb_synthetic(args.workdir / "session.nwb", trials_per_condition=args.trials_per_condition)
    files = prepare_nlb("mc_maze", nwb, BIN_MS, args.workdir / "mc_maze.h5", truth=truth)
    targets = read_targets(files.targets)
    with h5py.File(files.data) as h5:
        data = {key: h5[key][()] for key in h5}
    timings = {"data": time.perf_counter() - began}
    rows: dict[str, dict[str, float]] = {}

    start = time.perf_counter()
    rows["(a) smoothing + Poisson GLM"] = score(targets, smoothing_baseline(data, targets))
    timings["smoothing"] = time.perf_counter() - start

    config = apply_overrides(Config(), ["train.threads", str(args.threads), "train.max_epochs", str(args.max_epochs)])
    start = time.perf_counter()
    result = train(config, files.data, args.workdir / "lfads", write_outputs=True, echo=None)
    rows[f"(b) LFADS, default hyperparameters ({result.epochs} epochs, best {result.best_epoch})"] = evaluate_output(
        result.outputs[0], targets
    )[0]
    timings["lfads"] = time.perf_counter() - start

    start = time.perf_counter()
    settings = SearchSettings(
        population=args.population,
        epochs_per_generation=args.epochs_per_generation,
        max_generations=args.max_generations,
    )
    outcome = search(
        apply_overrides(Config(), ["train.threads", str(args.threads)]), files.data, args.workdir / "search", settings
    )
    rows[f"(c) AutoLFADS, {args.population} members, {outcome.generations} generations"] = evaluate_output(
        outcome.outputs[0], targets
    )[0]
    timings["autolfads"] = time.perf_counter() - start

    truth_rates = {split: (data[f"{split}_inds"], data[f"{split}_truth"]) for split in ("train", "valid")}
    rows["(d) true rates (ceiling)"] = score(targets, submission_from_rates(truth_rates, targets))

    print(f"data: {files.summary.splitlines()[0]}")
    print(
        f"torch {torch.__version__}, threads {args.threads}; LFADS: default config, max_epochs {args.max_epochs}; "
        f"AutoLFADS: population {args.population}, {args.epochs_per_generation} epochs per generation, max "
        f"{args.max_generations} generations"
    )
    print("wall time: " + ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in timings.items()))
    print(format_table(rows))
    (args.workdir / "results.json").write_text(json.dumps({"rows": rows, "timings_s": timings}, indent=2) + "\n")


def smoothing_baseline(data: dict[str, np.ndarray], targets) -> dict[str, np.ndarray]:
    """NLB's spike-smoothing baseline, on the training file's arrays (train = NLB train trials, valid = NLB val)."""
    heldin, trial_bins = targets.heldin, targets.trial_bins
    smoothed = {
        split: gaussian_filter1d(data[f"{split}_encod_data"].astype(float), 50 / BIN_MS, axis=1, mode="nearest")
        for split in ("train", "valid")
    }
    heldout_counts = data["train_recon_data"][:, :trial_bins, heldin:]
    glms = [
        PoissonRegressor(alpha=1e-2, max_iter=500).fit(
            smoothed["train"].reshape(-1, heldin), heldout_counts[..., n].ravel()
        )
        for n in range(heldout_counts.shape[2])
    ]
    forward = data["train_recon_data"][:, trial_bins:].mean(axis=0)  # each neuron's train-trial mean per forward bin
    rates = {}
    for split, held_in in smoothed.items():
        held_out = np.stack(
            [glm.predict(held_in.reshape(-1, heldin)).reshape(held_in.shape[:2]) for glm in glms], axis=2
        )
        trial = np.concatenate([held_in, held_out], axis=2)
        full = np.concatenate([trial, np.broadcast_to(forward, (len(trial),) + forward.shape)], axis=1)
        rates[split] = (
            data[f"{split}_inds"],
            np.maximum(full, 1e-4),
        )  # silent stretches smooth to 0, which would score as 1e-9
    return submission_from_rates(rates, targets)


if __name__ == "__main__":
    main()
