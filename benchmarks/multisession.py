"""Stitching: one LFADS model over three sessions vs three single-session models, same epochs.

Writes the synthetic multi-session set (`autolfads data multisession`: one Lorenz system, three sessions
with their own neurons; by default 6, 8 and 10 neurons, the case stitching is for: each session alone sees
the latent state through few neurons), then trains
  (a) one stitched model over all three files (PCR read-in/read-out), E epochs over all sessions' trials;
  (b) one model per session, E epochs each over its own trials (the same trial passes in total).
Both use examples/configs/lorenz.yaml with early stopping off, posterior-sample their best checkpoint
(50 samples) and are scored per session: R^2 of the valid trials' inferred rates against the true rates
(per neuron over trials x bins, averaged over neurons). Then times one training epoch of (a) against the
three epochs of (b) (the same trials), alternating, best of --timing-rounds.

    python benchmarks/multisession.py [--epochs 150] [--workdir runs/bench-multisession] [--threads 1] [KEY VALUE ...]
"""

import argparse
import math
import shutil
import time
from pathlib import Path

import h5py
import torch

from autolfads.config import apply_overrides, load_config
from autolfads.data.dataset import load_sessions
from autolfads.data.multisession_synthetic import write_multisession
from autolfads.train.metrics import r2_score
from autolfads.train.run import load_run_data, train
from autolfads.train.trainer import Trainer

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "configs" / "lorenz.yaml"


def valid_r2(output: Path, session) -> float:
    with h5py.File(output, "r") as f:
        return float(r2_score(torch.from_numpy(f["valid_rates"][()])[None], session.valid.truth))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-multisession"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trials-per-condition", type=int, default=8, help="per session (the data's default: 8)")
    parser.add_argument("--neurons-per-session", default="6,8,10", help="(the data command's default is 25,30,35)")
    parser.add_argument("--seed", type=int, default=0, help="of the data set")
    parser.add_argument("--timing-rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.readin_init random")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)  # fresh runs: train() would resume old ones
    files = write_multisession(
        args.workdir / "data",
        trials_per_condition=args.trials_per_condition,
        neurons_per_session=args.neurons_per_session,
        seed=args.seed,
    )
    sessions = load_sessions(args.workdir / "data")
    epochs = str(args.epochs)
    config = apply_overrides(
        load_config(CONFIG),
        ["train.threads", str(args.threads), "train.max_epochs", epochs, "train.patience", epochs, *args.overrides],
    )

    start = time.perf_counter()
    stitched = train(config, args.workdir / "data", args.workdir / "stitched", write_outputs=True, echo=None)
    stitched_time = time.perf_counter() - start
    start = time.perf_counter()
    separate = [
        train(config, file, args.workdir / f"separate_{session.name}", write_outputs=True, echo=None)
        for file, session in zip(files, sessions, strict=True)
    ]
    separate_time = time.perf_counter() - start

    print(
        f"data: {args.trials_per_condition} trials per condition and session, neurons {args.neurons_per_session}, "
        f"seed {args.seed}"
    )
    print(
        f"config: {CONFIG.name} + {args.overrides}, {args.epochs} epochs, early stopping off; torch "
        f"{torch.__version__}, threads {args.threads}, batch {config.train.batch_size}"
    )
    print(
        f"wall time: stitched {stitched_time / 60:.1f} min, three separate models {separate_time / 60:.1f} min "
        "(training + 50-sample outputs)"
    )
    print(f"{'session':<12} {'neurons':>7} {'train/valid':>11} {'R^2 stitched':>13} {'R^2 separate':>13}")
    rows = []
    for session, output, alone in zip(sessions, stitched.outputs, separate, strict=True):
        rows.append((valid_r2(output, session), valid_r2(alone.outputs[0], session)))
        trials = f"{session.train.n_trials}/{session.valid.n_trials}"
        print(f"{session.name:<12} {session.recon_dim:>7} {trials:>11} {rows[-1][0]:>13.4f} {rows[-1][1]:>13.4f}")
    mean = [sum(column) / len(rows) for column in zip(*rows, strict=True)]
    print(f"{'mean':<12} {'':>7} {'':>11} {mean[0]:>13.4f} {mean[1]:>13.4f}")

    stitched_trainer = Trainer(*load_run_data(config, args.workdir / "data"))
    separate_trainers = [Trainer(*load_run_data(config, file)) for file in files]
    best = {"stitched": math.inf, "separate": math.inf}
    for _ in range(args.timing_rounds):
        for name, trainers in (("stitched", [stitched_trainer]), ("separate", separate_trainers)):
            start = time.perf_counter()
            for trainer in trainers:
                trainer.train_epoch()
            best[name] = min(best[name], time.perf_counter() - start)
    print(
        f"training epoch over all {sum(s.train.n_trials for s in sessions)} trials: stitched {best['stitched']:.2f} s, "
        f"three separate models {best['separate']:.2f} s (stitched / separate "
        f"{best['stitched'] / best['separate']:.2f}, best of {args.timing_rounds})"
    )


if __name__ == "__main__":
    main()
