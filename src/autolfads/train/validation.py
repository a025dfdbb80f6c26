"""Validation metrics of a population on one split: posterior means, no dropout, every member at once.

NLLs by region (held-in, held-out, forward bins, sample-validation entries), bits per spike against a
null model of each neuron's mean rate, R^2 of rates against known truth, and the validation loss. With
several sessions every sum and count runs over all of them.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..config import ModelConfig, TrainConfig
from ..data.dataset import Split
from ..model import LFADS
from ..model.augmentations import sbtt_targets
from .batches import take_batch
from .metrics import R2Accumulator, bits_per_spike, null_nll_sum, poisson_nll
from .objective import ramp, total_loss

BPS_OF_REGION = (("nll_heldin", "bps"), ("nll_heldout", "co_bps"), ("nll_fp", "fp_bps"))
# Validation runs in batches of at least this many trials: a recurrent pass costs nearly the same for few trials
# as for many, so small data validates in one pass (20 trials: half the time of batches 16 + 4). No gradients:
# it holds less than a training step of this batch.
MIN_VALID_BATCH = 128


@dataclass
class _Totals:
    """Sums (P,) and counts over every session of a split."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)
    null: dict[str, list[float]] = field(default_factory=dict)  # region -> [null NLL sum, spikes]
    r2_parts: list[tuple[torch.Tensor, int]] = field(default_factory=list)  # (R^2, neurons) per session

    def add(self, name: str, value: torch.Tensor) -> None:
        self.sums[name] = self.sums.get(name, 0) + value.double().cpu()

    def count(self, name: str, value: float) -> None:
        self.counts[name] = self.counts.get(name, 0.0) + value


@dataclass(frozen=True)
class ValidationSessions:
    """What validation reads of each session: its config, its splits, the null model's NLL sums
    (`null_nll_of_split`'s, [session][split][region]) and its sample-validation weights (session, split)."""

    cfgs: Sequence[ModelConfig]
    splits: Sequence[dict[str, Split]]
    null_nll: Sequence[dict[str, dict[str, tuple[float, float]]]]
    sv_weight: Callable[[int, Split], torch.Tensor | None]


@torch.no_grad()
def evaluate(
    model: LFADS,
    hp: dict[str, torch.Tensor],
    sessions: ValidationSessions,
    split_name: str,
    train: TrainConfig,
    epoch: int,
) -> dict[str, torch.Tensor]:
    """Metrics (P,) prefixed `val_` for the valid split (`<split>_` otherwise)."""
    model.eval()
    totals = _Totals()
    for session in range(len(sessions.cfgs)):
        _add_session(totals, model, hp, sessions, session, split_name, train)
        for name, (null_sum, spikes) in sessions.null_nll[session][split_name].items():
            total = totals.null.setdefault(name, [0.0, 0.0])
            total[0], total[1] = total[0] + null_sum, total[1] + spikes
    metrics = _metrics(totals, poisson=sessions.cfgs[0].reconstruction == "poisson", sessions=len(sessions.splits))
    l2 = model.l2_penalty(l2_scales(hp)).double().cpu()
    kl_ramp = ramp(epoch, train.kl_start_epoch, train.kl_increase_epoch)
    l2_ramp = ramp(epoch, train.l2_start_epoch, train.l2_increase_epoch)
    hp = {name: value.double().cpu() for name, value in hp.items()}
    metrics["loss"] = total_loss(
        metrics["recon"], metrics["kl_ic"], metrics["kl_co"], l2, hp, kl_ramp, l2_ramp, train.loss_scale
    )
    prefix = "val_" if split_name == "valid" else f"{split_name}_"
    return {prefix + name: value.float() for name, value in metrics.items()}


def l2_scales(hp: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The per-member L2 scale of each weight group, as LFADS.l2_penalty takes them."""
    return {group: hp[f"l2_{group}_scale"] for group in ("ic_enc", "ci_enc", "gen", "con")}


def _add_session(
    totals: _Totals,
    model: LFADS,
    hp: dict[str, torch.Tensor],
    sessions: ValidationSessions,
    session: int,
    split_name: str,
    train: TrainConfig,
) -> None:
    """One session's sums and counts (with train.sampled_metric on the valid split: also the NLL of a posterior
    sample, for SAMPLED_METRIC)."""
    cfg, split = sessions.cfgs[session], sessions.splits[session][split_name]
    sv_weight = sessions.sv_weight(session, split)
    sampled = train.sampled_metric and split_name == "valid"
    batch_size = max(train.batch_size, MIN_VALID_BATCH)
    start, t_enc = cfg.loss_start_bin, cfg.encod_seq_len
    regions = _regions(cfg)
    r2 = R2Accumulator(split.truth) if split.truth is not None else None
    for indices in torch.arange(split.n_trials).split(batch_size):
        batch = take_batch(split, indices, sv_weight)
        encod = batch.masked_encod()
        out = model(encod, hp["dropout_rate"], batch.ext_input, session=session)
        target, sbtt_weight = sbtt_targets(batch.recon)
        observed = None if sbtt_weight is None else sbtt_weight > 0  # missing bins (SBTT) count nowhere
        nll = _observed(model.reconstruction.nll(out.output_params, target), observed)
        totals.add("recon", nll[:, :, start:].sum((1, 2, 3)))
        if sampled:
            drawn = model(encod, hp["dropout_rate"], batch.ext_input, sample=True, session=session)
            sampled_nll = _observed(model.reconstruction.nll(drawn.output_params, target), observed)
            totals.add("recon_sampled", sampled_nll[:, :, start:].sum((1, 2, 3)))
        totals.add("kl_ic", out.kl_ic * len(indices))
        totals.add("kl_co", out.kl_co * len(indices))
        for name, (bins, neurons) in regions.items():
            region = nll[:, :, bins, neurons]
            if name == "nll_heldin" and batch.sv_weight is not None:
                kept = (batch.sv_weight[:, bins] > 0).to(region.dtype)
                totals.add("sv_nll", (region * (1 - kept)).sum((1, 2, 3)))
                region = region * kept
            totals.add(name, region.sum((1, 2, 3)))
        if r2 is not None:
            r2.add(out.rates, batch.truth)
    for name, (bins, neurons) in regions.items():
        totals.count(name, float(torch.isfinite(split.recon[:, bins, neurons]).sum()))  # observed entries (SBTT)
    if sv_weight is not None:
        held_back = float((sv_weight[:, :t_enc] == 0).sum())
        totals.count("sv_nll", max(held_back, 1.0))
        totals.count("nll_heldin", -held_back)
    totals.count("recon", float(torch.isfinite(split.recon[:, start:]).sum()))
    totals.count("trials", split.n_trials)
    if r2 is not None:
        totals.r2_parts.append((r2.value().cpu(), cfg.recon_dim))


def _metrics(totals: _Totals, poisson: bool, sessions: int) -> dict[str, torch.Tensor]:
    sums, counts = totals.sums, totals.counts
    metrics = {
        "recon": sums["recon"] / max(counts["recon"], 1.0),
        "kl_ic": sums["kl_ic"] / counts["trials"],
        "kl_co": sums["kl_co"] / counts["trials"],
    }
    if "recon_sampled" in sums:
        metrics["recon_sampled"] = sums["recon_sampled"] / max(counts["recon"], 1.0)
    for name in ("nll_heldin", "nll_heldout", "nll_fp", "sv_nll"):
        if name in sums:
            metrics[name] = sums[name] / counts[name]
    if poisson:
        for name, bps_name in BPS_OF_REGION:
            if name in sums and not (name == "nll_heldin" and "sv_nll" in sums):
                null_sum, spikes = totals.null[name]
                metrics[bps_name] = bits_per_spike(sums[name], torch.tensor(null_sum, dtype=torch.float64), spikes)
    if totals.r2_parts and len(totals.r2_parts) == sessions:
        neurons = sum(n for _, n in totals.r2_parts)
        metrics["r2"] = sum(value * (n / neurons) for value, n in totals.r2_parts)
    return metrics


def _regions(cfg: ModelConfig) -> dict[str, tuple[slice, slice]]:
    """(bins, neurons) of each scored region: held-in, held-out neurons (cs_dim), forward bins (fp_len)."""
    start, t_enc, n_enc = cfg.loss_start_bin, cfg.encod_seq_len, cfg.encod_dim
    regions = {"nll_heldin": (slice(start, t_enc), slice(0, n_enc))}
    if cfg.cs_dim > 0:
        regions["nll_heldout"] = (slice(start, t_enc), slice(n_enc, None))
    if cfg.fp_len > 0:
        regions["nll_fp"] = (slice(t_enc, None), slice(None))
    return regions


def _observed(nll: torch.Tensor, observed: torch.Tensor | None) -> torch.Tensor:
    return nll if observed is None else nll * observed


def null_nll_of_split(cfg: ModelConfig, split: Split) -> dict[str, tuple[float, float]]:
    """Null-model NLL sums and spike counts per region: the data-only half of bits per spike."""
    recon = split.recon.double().cpu()
    start, t_enc, n_enc = cfg.loss_start_bin, cfg.encod_seq_len, cfg.encod_dim
    regions = {
        "nll_heldin": recon[:, start:t_enc, :n_enc],
        "nll_heldout": recon[:, start:t_enc, n_enc:],
        "nll_fp": recon[:, t_enc:],
    }
    return {name: _null_nll_observed(counts) for name, counts in regions.items() if counts.numel() > 0}


def _null_nll_observed(counts: torch.Tensor) -> tuple[float, float]:
    """Null NLL sum and spike count of a region; NaN (missing, SBTT) entries count nowhere."""
    observed = ~torch.isnan(counts)
    if bool(observed.all()):
        return null_nll_sum(counts), float(counts.sum())
    filled = torch.nan_to_num(counts, nan=0.0)
    rates = (filled.sum((0, 1)) / observed.sum((0, 1)).clamp_min(1)).expand_as(counts)
    return float((poisson_nll(rates, filled) * observed).sum()), float(filled.sum())
