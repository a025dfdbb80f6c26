"""Neural Latents Benchmark evaluation: NLB's metrics in NumPy, scoring rules, targets and submission files.

autolfads evaluate --output runs/mc_maze/lfads_output.h5 --targets data/mc_maze_targets.h5 --json scores.json
"""

from pathlib import Path

import numpy as np

from ..data.nlb_targets import Targets, read_targets, write_targets
from ..errors import EvaluationError
from .files import read_output_rates, write_json, write_submission
from .scoring import SUBMISSION_KEYS, format_table, score, submission_from_rates

__all__ = [
    "SUBMISSION_KEYS",
    "Targets",
    "evaluate_output",
    "format_table",
    "read_output_rates",
    "read_targets",
    "score",
    "submission_from_rates",
    "submission_for_test_phase",
    "write_json",
    "write_submission",
    "write_targets",
]


def evaluate_output(output: str | Path, targets: Targets) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Score an LFADS output file against NLB targets -> (metrics by NLB name, the submission)."""
    submission = submission_from_rates(read_output_rates(output), targets)
    return score(targets, submission), submission


def submission_for_test_phase(output: str | Path, targets: Targets) -> dict[str, np.ndarray]:
    """NLB's test-phase submission from an LFADS output: eval = its test split (NLB's 'test' trials, whose
    held-out neurons only NLB has), train = NLB's 'train' and 'val' trials, in trial order."""
    rates = read_output_rates(output)
    if "test" not in rates:
        raise EvaluationError(
            f"{output}: no test_rates: the data file had no NLB 'test' trials (give `data nlb` the folder with the "
            "test NWB file)"
        )
    train_ids = np.sort(np.concatenate([targets.train_ids, targets.eval_ids]))
    return submission_from_rates(rates, targets, train_ids, np.sort(rates["test"][0]))
