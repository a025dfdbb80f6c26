"""Quality on the default synthetic Lorenz set: R^2 of inferred rates against the true rates.

Generates the default Lorenz data (`autolfads data lorenz`), trains the example config
(examples/configs/lorenz.yaml) to completion, posterior-samples the best checkpoint (50 samples) and
scores the validation trials: R^2 per neuron over trials x bins, averaged over neurons. Target >= 0.85.

    python benchmarks/lorenz_quality.py [--workdir runs/bench-lorenz] [--threads 1] [KEY VALUE ...]
"""

import argparse
import time
from pathlib import Path

import h5py
import torch

from autolfads.config import apply_overrides, load_config
from autolfads.data import load_data, write_synthetic
from autolfads.train import train
from autolfads.train.metrics import r2_score

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "configs" / "lorenz.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-lorenz"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.max_epochs 100")
    args = parser.parse_args()
    data_file = write_synthetic("lorenz", args.workdir / "lorenz.h5")
    config = apply_overrides(load_config(CONFIG), ["train.threads", str(args.threads), *args.overrides])
    start = time.perf_counter()
    result = train(config, data_file, args.workdir / "model", write_outputs=True, echo=None)
    elapsed = time.perf_counter() - start
    data = load_data(data_file)
    with h5py.File(result.output, "r") as f:
        scores = {split: float(r2_score(torch.from_numpy(f[f"{split}_rates"][()])[None], getattr(data, split).truth)) for split in ("train", "valid")}
    print(f"config: {CONFIG.name} + {args.overrides}; torch {torch.__version__}, threads {args.threads}, batch {config.train.batch_size}")
    print(f"data: {data.train.n_trials} train / {data.valid.n_trials} valid trials, {data.recon_dim} neurons x {data.recon_seq_len} bins")
    print(f"epochs {result.epochs} (best {result.best_epoch}), wall time {elapsed / 60:.1f} min (training + 50-sample posterior output)")
    print(f"rate R^2 vs truth: valid {scores['valid']:.4f}, train {scores['train']:.4f} (target >= 0.85 on valid)")


if __name__ == "__main__":
    main()
