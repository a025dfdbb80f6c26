"""NLB metrics of a population during training: each member's posterior-mean rates scored against the
targets of `autolfads data nlb` (data.nlb_targets). The targets are read by the caller (`load_nlb_targets`)
and checked against the data once, so the Trainer itself reads no file."""

import math
from pathlib import Path

import numpy as np
import torch

from ..config import Config, ModelConfig
from ..data.dataset import Split
from ..errors import ConfigError
from ..evaluate import Targets, read_targets, score, submission_from_rates
from ..model import LFADS
from ..names import NLB_METRIC_NAMES


def load_nlb_targets(config: Config) -> Targets | None:
    """data.nlb_targets read from disk, or None when the config names none."""
    return None if config.data.nlb_targets is None else read_targets(config.data.nlb_targets)


def check_nlb_targets(
    targets: Targets, path: str | Path | None, cfg: ModelConfig, splits: dict[str, Split], data_path: Path
) -> None:
    """The targets belong to the data: the same trials, bins and neurons."""
    shape = (targets.trial_bins + targets.forward_bins, targets.heldin + targets.heldout, targets.heldin)
    known = np.concatenate([split.inds for split in splits.values()])
    missing = np.setdiff1d(np.concatenate([targets.train_ids, targets.eval_ids]), known)
    if shape != (cfg.recon_seq_len, cfg.recon_dim, cfg.encod_dim) or missing.size:
        raise ConfigError(
            f"data.nlb_targets {path} ({targets.name}: {shape[0]} bins, {shape[2]}+{shape[1] - shape[2]} neurons) "
            f"does not belong to the data {data_path} ({cfg.recon_seq_len} bins, {cfg.encod_dim}+{cfg.cs_dim} neurons"
            + (f", no trial {int(missing[0])})" if missing.size else ")")
        )


@torch.no_grad()
def nlb_metrics(model: LFADS, splits: dict[str, Split], targets: Targets, batch_size: int) -> dict[str, torch.Tensor]:
    """NLB's metrics (nlb_co_bps, nlb_vel_r2 or nlb_tp_corr, nlb_psth_r2, nlb_fp_bps) of each member's
    posterior-mean rates (no sampling, no dropout), (P,) each; NaN for a member whose rates are not finite."""
    model.eval()
    no_dropout = torch.zeros(model.population_size, device=model.rng.device)
    rates = {}
    for name, split in splits.items():
        batches = []
        for indices in torch.arange(split.n_trials, device=split.encod.device).split(batch_size):
            ext_input = None if split.ext_input is None else split.ext_input[indices]
            batches.append(model(split.encod[indices], no_dropout, ext_input).rates.float().cpu())
        rates[name] = (split.inds, torch.cat(batches, dim=1).numpy())
    rows = [_member_scores(targets, rates, member) for member in range(model.population_size)]
    names = dict.fromkeys(name for row in rows for name in row)
    return {f"nlb_{NLB_METRIC_NAMES[name]}": torch.tensor([row.get(name, math.nan) for row in rows]) for name in names}


def _member_scores(targets: Targets, rates: dict, member: int) -> dict[str, float]:
    member_rates = {name: (inds, values[member]) for name, (inds, values) in rates.items()}
    finite = all(np.isfinite(values).all() for _, values in member_rates.values())
    return score(targets, submission_from_rates(member_rates, targets)) if finite else {}
