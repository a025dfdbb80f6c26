"""Quality on the default synthetic Lorenz set: R^2 of inferred rates against the true rates.

Generates the default Lorenz data (`autolfads data lorenz`), trains a config to completion (the example
examples/configs/lorenz.yaml, or `--config builtin`: the package defaults with no config file),
posterior-samples the best checkpoint (50 samples) and scores the validation trials: R^2 per neuron over
trials x bins, averaged over neurons. Target >= 0.85.

    python benchmarks/lorenz_quality.py [--config builtin|FILE] [--workdir runs/bench-lorenz] \
[--threads 1] [KEY VALUE ...]
"""

import argparse
import time
from pathlib import Path

import h5py
import torch

from autolfads.config import Config, apply_overrides, load_config
from autolfads.data.dataset import load_data
from autolfads.data.synthetic import write_synthetic
from autolfads.train.metrics import r2_score
from autolfads.train.run import train

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "configs" / "lorenz.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONFIG), help="a config file, or 'builtin' for the package defaults")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-lorenz"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.max_epochs 100")
    args = parser.parse_args()
    data_file = write_synthetic("lorenz", args.workdir / "lorenz.h5")
    base = Config() if args.config == "builtin" else load_config(args.config)
    config = apply_overrides(base, ["train.threads", str(args.threads), *args.overrides])
    start = time.perf_counter()
    result = train(config, data_file, args.workdir / "model", write_outputs=True, echo=None)
    elapsed = time.perf_counter() - start
    data = load_data(data_file)
    with h5py.File(result.outputs[0], "r") as f:
        scores = {
            split: float(r2_score(torch.from_numpy(f[f"{split}_rates"][()])[None], getattr(data, split).truth))
            for split in ("train", "valid")
        }
    print(
        f"config: {Path(args.config).name} + {args.overrides}; torch {torch.__version__}, threads {args.threads}, "
        f"batch {config.train.batch_size}"
    )
    print(
        f"data: {data.train.n_trials} train / {data.valid.n_trials} valid trials, {data.recon_dim} neurons x "
        f"{data.recon_seq_len} bins"
    )
    print(
        f"epochs {result.epochs} (best {result.best_epoch}), wall time {elapsed / 60:.1f} min (training + 50-sample "
        "posterior output)"
    )
    print(f"rate R^2 vs truth: valid {scores['valid']:.4f}, train {scores['train']:.4f} (target >= 0.85 on valid)")


if __name__ == "__main__":
    main()
