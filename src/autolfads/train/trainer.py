"""Training a population of P LFADS models: a short, explicit loop over epochs and batches.

The Trainer owns the model, optimizer and training state, and does no file I/O; `autolfads.train.run`
adds checkpoints, logs and outputs around it. P = 1 is an ordinary single-model run.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..config import Config, ModelConfig, member_hparams, with_member_hparams
from ..data.dataset import LFADSData, Split
from ..errors import ConfigError
from ..evaluate import Targets, read_targets, score, submission_from_rates
from ..model import LFADS
from ..model.augmentations import (
    coordinated_dropout,
    sample_validation_mask,
    sbtt_targets,
    spike_jitter,
    temporal_shift,
)
from ..model.readin_readout import pcr_session_inits
from ..names import MEMBER_HPARAMS, METRIC, NLB_METRIC_NAMES, SAMPLED_METRIC
from .metrics import R2Accumulator, bits_per_spike, null_nll_sum, poisson_nll, smooth
from .objective import ramp, reconstruction_loss, total_loss
from .optim import PopulationAdam, clip_member_grad_norms


def weighted_mean(means: Sequence[torch.Tensor], sizes: Sequence[int]) -> torch.Tensor:
    """The mean over all parts from each part's mean and size (exactly the part's mean when there is one)."""
    total = sum(sizes)
    return sum(mean * (size / total) for mean, size in zip(means, sizes, strict=True))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Batch:
    encod: torch.Tensor  # (B, T_enc, N_enc)
    recon: torch.Tensor  # (B, T_recon, N_recon)
    ext_input: torch.Tensor | None
    truth: torch.Tensor | None
    sv_weight: torch.Tensor | None  # sample-validation mask scaled by 1 / (1 - sv_rate); 0 = held back


@dataclass
class TrainingPart:
    """The trials of one session in a training batch, ready for the model."""

    cfg: ModelConfig  # the session's view of the model config
    batch: Batch
    inputs: torch.Tensor  # encoder inputs after coordinated dropout, (P, B, T_enc, N_enc)
    grad_mask: torch.Tensor | None  # coordinated dropout's gradient mask


class Trainer:
    def __init__(
        self,
        config: Config,
        data: LFADSData | Sequence[LFADSData],
        population: Sequence[Mapping[str, float]] | None = None,
        member_seeds: Sequence[int] | None = None,
    ):
        """config: resolved against the data (dimensions set). data: one session, or the sessions of a
        stitched model in the order of model.sessions. population: per-member hyperparameter values
        overriding the config's (one mapping per member; default one member with the config's values)."""
        self.config = config
        self.sessions = [data] if isinstance(data, LFADSData) else list(data)
        if len(self.sessions) != config.model.n_sessions:
            raise ConfigError(
                f"the config is resolved for {config.model.n_sessions} session(s) but {len(self.sessions)} were given"
            )
        self.session_cfgs = [config.model.session(s) for s in range(len(self.sessions))]
        train = config.train
        members = [dict(member_hparams(config), **(values or {})) for values in (population or [{}])]
        for values in members:
            with_member_hparams(config, values)  # validates ranges member by member
        seeds = list(member_seeds) if member_seeds is not None else [train.seed + p for p in range(len(members))]
        if len(seeds) != len(members):
            raise ValueError(f"{len(members)} members but {len(seeds)} seeds")
        self.device = resolve_device(train.device)
        self.model = LFADS(config.model, seeds, self.device, fused=train.fused_rnn)
        if config.model.multisession and config.model.readin_init == "pcr":
            self.model.init_sessions(pcr_session_inits(self.sessions, config.model, self.model.reconstruction))
        self.params = [param for param in self.model.parameters() if param.requires_grad]  # fixed read-ins are not
        self.optimizer = PopulationAdam(
            self.params, eps=train.adam_epsilon, weight_decay=train.weight_decay, epsilon_hat=train.adam_epsilon_hat
        )
        size = len(members)
        self.members = members  # exact values; self.hp holds them as (P,) tensors for the computation
        self.hp = self._hp_tensors()
        self.lr = self.hp["lr_init"].clone()
        self.epoch = 0  # epochs completed
        nan, inf = torch.full((size,), math.nan), torch.full((size,), math.inf)
        self.smth_metric, self.best_metric, self.lr_best_metric, self.smth_sampled = (
            nan.clone(),
            inf.clone(),
            inf.clone(),
            nan.clone(),
        )
        self.best_epoch = torch.full((size,), -1)
        self.plateau_epochs = torch.zeros(size, dtype=torch.long)
        # lr_rule lfads_tf2: the raw val_loss of the last lr_patience + 1 epochs (oldest first), epochs at the current lr
        self.val_loss_window = torch.full((size, train.lr_patience + 1), math.nan)
        self.epochs_at_lr = torch.zeros(size, dtype=torch.long)
        self.stopped = torch.zeros(size, dtype=torch.bool)  # early stopping or lr_stop reached: the caller decides
        self.diverged = torch.zeros(size, dtype=torch.bool)  # NaN/Inf loss seen: updates skipped until PBT replaces it
        self.data_rng = torch.Generator().manual_seed(train.seed + 7_919)
        self.history: list[dict[str, float]] = []
        # splits[session][name]: every split with reconstruction targets, on the device
        self.splits = [
            {split.name: self._to_device(split) for split in session.splits if split.recon is not None}
            for session in self.sessions
        ]
        self._sv_weights: dict[tuple[int, str], torch.Tensor] = {}
        self.null_nll = [
            {name: self._null_nll(cfg, split) for name, split in splits.items()}
            for cfg, splits in zip(self.session_cfgs, self.splits, strict=True)
        ]
        for session in range(len(self.sessions)):
            self._check_augmentations(session)
        self.nlb_targets = None  # data.nlb_targets, read when first needed (sampling never needs it)
        if train.nlb_every and config.data.nlb_targets is None:
            raise ConfigError("train.nlb_every needs data.nlb_targets: the targets file of `autolfads data nlb`")
        if config.model.multisession and (train.nlb_every or config.data.nlb_targets is not None):
            raise ConfigError(
                "NLB metrics (train.nlb_every, data.nlb_targets) score one NLB session; this model stitches several"
            )
        self.ramp_end_epoch = max(
            train.kl_start_epoch + train.kl_increase_epoch, train.l2_start_epoch + train.l2_increase_epoch
        )

    @property
    def population_size(self) -> int:
        return self.model.population_size

    # ---------------------------------------------------------------- per-member hyperparameters
    def set_member_hparams(self, member: int, values: Mapping[str, float]) -> None:
        """Apply new hyperparameters to one member (after any state restore, so they are not overwritten)."""
        updated = {**self.members[member], **{name: float(value) for name, value in values.items()}}
        with_member_hparams(self.config, updated)
        self.members[member] = updated
        self.hp = self._hp_tensors()
        if "lr_init" in values:
            self.lr[member] = updated["lr_init"]

    def member_hparams(self, member: int) -> dict[str, float]:
        return dict(self.members[member])

    @torch.no_grad()
    def copy_member(self, source: int, target: int) -> None:
        """PBT exploit: `target` takes `source`'s weights, optimizer state and training state (its own
        random stream stays). Set new hyperparameters afterwards with set_member_hparams."""
        for tensor in [
            *self.model.state_dict().values(),
            self.optimizer.steps,
            *self.optimizer.exp_avg,
            *self.optimizer.exp_avg_sq,
            self.lr,
        ]:
            tensor[target] = tensor[source]
        for name in self._STATE_TENSORS:
            getattr(self, name)[target] = getattr(self, name)[source]
        self.members[target] = dict(self.members[source])
        self.hp = self._hp_tensors()

    def member_state(self, member: int) -> dict:
        """The state_dict of a one-member Trainer holding `member` (e.g. the best of a search)."""
        state = self.state_dict()
        one = slice(member, member + 1)
        optimizer = state["optimizer"]
        trainer = state["trainer"]
        return {
            "model": {name: tensor[one].clone() for name, tensor in state["model"].items()},
            "optimizer": {
                "steps": optimizer["steps"][one].clone(),
                "exp_avg": [t[one].clone() for t in optimizer["exp_avg"]],
                "exp_avg_sq": [t[one].clone() for t in optimizer["exp_avg_sq"]],
            },
            "trainer": {
                "epoch": trainer["epoch"],
                "lr": trainer["lr"][one].clone(),
                "members": [trainer["members"][member]],
                **{name: trainer[name][one].clone() for name in self._STATE_TENSORS},
            },
            "rng": {"members": [state["rng"]["members"][member]], "data": state["rng"]["data"]},
            "history": [{**row, "member": 0} for row in state["history"] if row["member"] == member],
        }

    def _hp_tensors(self) -> dict[str, torch.Tensor]:
        return {name: torch.tensor([m[name] for m in self.members], device=self.device) for name in MEMBER_HPARAMS}

    # ---------------------------------------------------------------- one epoch
    def run_epoch(self, nlb: bool = False) -> dict[str, torch.Tensor]:
        """Train one epoch, validate, update smoothing / schedules / early stopping. Metrics are (P,).
        nlb: score NLB metrics this epoch too (they are every train.nlb_every epochs anyway)."""
        metrics = self.train_epoch()
        metrics.update(self.evaluate("valid"))
        every = self.config.train.nlb_every
        if nlb or (every and (self.epoch + 1) % every == 0):
            metrics.update(self.nlb_metrics())
        self._end_epoch(metrics)
        self.epoch += 1
        return metrics

    def train_epoch(self) -> dict[str, torch.Tensor]:
        train = self.config.train
        kl_ramp = ramp(self.epoch, train.kl_start_epoch, train.kl_increase_epoch)
        l2_ramp = ramp(self.epoch, train.l2_start_epoch, train.l2_increase_epoch)
        self.optimizer.weight_decay = train.weight_decay * l2_ramp  # lfads-torch ramps weight decay with the L2 penalty
        sizes = torch.tensor([splits["train"].n_trials for splits in self.splits])
        starts = torch.cumsum(sizes, 0) - sizes
        # One order over every session's trials: a batch mixes sessions in proportion to their trials.
        n_trials = int(sizes.sum())
        order = torch.randperm(n_trials, generator=self.data_rng)
        if train.drop_last and n_trials > train.batch_size:
            order = order[: n_trials - n_trials % train.batch_size]
        self.model.train()
        totals: dict[str, torch.Tensor] = {}
        for indices in order.split(train.batch_size):
            session_of = torch.bucketize(indices, starts, right=True) - 1
            sessions = [s for s in range(len(self.splits)) if bool((session_of == s).any())]
            parts = [self._training_part(s, indices[session_of == s] - starts[s]) for s in sessions]
            params, kl_ic, kl_co = self.model.forward_sessions(
                [p.inputs for p in parts], sessions, self.hp["dropout_rate"], [p.batch.ext_input for p in parts]
            )
            nlls = [self._training_nll(part, part_params) for part, part_params in zip(parts, params, strict=True)]
            heldins = [
                nll[:, :, part.cfg.loss_start_bin : part.cfg.encod_seq_len, : part.cfg.encod_dim].detach()
                for nll, part in zip(nlls, parts, strict=True)
            ]
            # Means over the whole batch: each part weighs by its share of the batch's elements.
            recon = weighted_mean(
                [
                    reconstruction_loss(nll, part.grad_mask, part.batch.sv_weight, part.cfg.loss_start_bin)
                    for nll, part in zip(nlls, parts, strict=True)
                ],
                [nll[0].numel() for nll in nlls],
            )
            heldin = weighted_mean([h.mean((1, 2, 3)) for h in heldins], [h[0].numel() for h in heldins])
            l2 = self.model.l2_penalty(self._l2_scales())
            loss = total_loss(
                recon,
                kl_ic,
                kl_co,
                l2,
                self.hp["kl_ic_weight"],
                self.hp["kl_co_weight"],
                kl_ramp,
                l2_ramp,
                train.loss_scale,
            )
            self.optimizer.zero_grad()
            loss.sum().backward()  # members share no weights: each gets exactly its own gradient
            grad_norm = clip_member_grad_norms(self.params, train.max_grad_norm)
            self.diverged |= ~torch.isfinite(loss.detach()).cpu()
            active = ~self.diverged.to(self.device) & torch.isfinite(grad_norm)
            self.optimizer.step(self.lr, active)
            values = {
                "loss": loss,
                "recon": recon,
                "nll_heldin": heldin,
                "kl_ic": kl_ic,
                "kl_co": kl_co,
                "l2": l2,
                "grad_norm": grad_norm,
            }
            for name, value in values.items():
                totals[name] = totals.get(name, 0) + value.detach().cpu().double() * len(indices)
        metrics = {name: (total / len(order)).float() for name, total in totals.items()}
        metrics["kl_ramp"] = torch.full((self.population_size,), kl_ramp)
        metrics["l2_ramp"] = torch.full((self.population_size,), l2_ramp)
        metrics["lr"] = self.lr.detach().cpu().clone()
        return metrics

    def _training_part(self, session: int, indices: torch.Tensor) -> TrainingPart:
        """One session's trials of a training batch, augmented, with coordinated dropout applied."""
        cfg = self.session_cfgs[session]
        batch = self._augment(self._batch(session, self.splits[session]["train"], indices), cfg)
        encod = batch.encod if batch.sv_weight is None else batch.encod * batch.sv_weight
        inputs, grad_mask = coordinated_dropout(
            encod, self.hp["cd_rate"], cfg.cd_pass_rate, self.model.rng, cfg.ic_enc_seq_len
        )
        return TrainingPart(cfg, batch, inputs, grad_mask)

    def _training_nll(self, part: TrainingPart, params: torch.Tensor) -> torch.Tensor:
        """Element-wise NLL (P, B, T, N); missing bins (SBTT) give none, the rest re-weighted by 1 / (1 - missing)."""
        target, sbtt_weight = sbtt_targets(part.batch.recon)
        nll = self.model.reconstruction.nll(params, target)
        return nll if sbtt_weight is None else nll * sbtt_weight

    @torch.no_grad()
    def evaluate(self, split_name: str) -> dict[str, torch.Tensor]:
        """Validation metrics with posterior means and no dropout, prefixed `val_` for the valid split.
        With several sessions every sum and count runs over all of them (R^2: the mean over all neurons)."""
        train = self.config.train
        self.model.eval()
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, float] = {}
        null: dict[str, list[float]] = {}
        r2_parts = []

        def add(name: str, value: torch.Tensor) -> None:
            sums[name] = sums.get(name, 0) + value.double().cpu()

        for session, (cfg, splits) in enumerate(zip(self.session_cfgs, self.splits, strict=True)):
            split = splits[split_name]
            start, t_enc, n_enc = cfg.loss_start_bin, cfg.encod_seq_len, cfg.encod_dim
            regions = {"nll_heldin": (slice(start, t_enc), slice(0, n_enc))}
            if cfg.cs_dim > 0:
                regions["nll_heldout"] = (slice(start, t_enc), slice(n_enc, None))
            if cfg.fp_len > 0:
                regions["nll_fp"] = (slice(t_enc, None), slice(None))
            r2 = R2Accumulator(split.truth) if split.truth is not None else None
            for indices in torch.arange(split.n_trials).split(train.batch_size):
                batch = self._batch(session, split, indices)
                encod = batch.encod if batch.sv_weight is None else batch.encod * batch.sv_weight
                out = self.model(encod, self.hp["dropout_rate"], batch.ext_input, session=session)
                target, sbtt_weight = sbtt_targets(batch.recon)
                nll = self.model.reconstruction.nll(out.output_params, target)
                if sbtt_weight is not None:  # missing bins count nowhere (_region_counts counts observed entries)
                    nll = nll * (sbtt_weight > 0)
                add("recon", nll[:, :, start:].sum((1, 2, 3)))
                if train.sampled_metric and split_name == "valid":
                    sampled = self.model(encod, self.hp["dropout_rate"], batch.ext_input, sample=True, session=session)
                    sampled_nll = self.model.reconstruction.nll(sampled.output_params, target)
                    if sbtt_weight is not None:
                        sampled_nll = sampled_nll * (sbtt_weight > 0)
                    add("recon_sampled", sampled_nll[:, :, start:].sum((1, 2, 3)))
                add("kl_ic", out.kl_ic * len(indices))
                add("kl_co", out.kl_co * len(indices))
                for name, (bins, neurons) in regions.items():
                    region = nll[:, :, bins, neurons]
                    if name == "nll_heldin" and batch.sv_weight is not None:
                        kept = (batch.sv_weight[:, bins] > 0).to(region.dtype)
                        add("sv_nll", (region * (1 - kept)).sum((1, 2, 3)))
                        region = region * kept
                    add(name, region.sum((1, 2, 3)))
                if r2 is not None:
                    r2.add(out.rates, batch.truth)
            for name, count in self._region_counts(session, split, regions).items():
                counts[name] = counts.get(name, 0.0) + count
            counts["recon"] = counts.get("recon", 0.0) + float(torch.isfinite(split.recon[:, start:]).sum())
            counts["trials"] = counts.get("trials", 0.0) + split.n_trials
            for name, (null_sum, spikes) in self.null_nll[session][split_name].items():
                total = null.setdefault(name, [0.0, 0.0])
                total[0], total[1] = total[0] + null_sum, total[1] + spikes
            if r2 is not None:
                r2_parts.append((r2.value().cpu(), cfg.recon_dim))
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
        if self.config.model.reconstruction == "poisson":
            for name, bps_name in (("nll_heldin", "bps"), ("nll_heldout", "co_bps"), ("nll_fp", "fp_bps")):
                if name in sums and not (name == "nll_heldin" and "sv_nll" in sums):
                    null_sum, spikes = null[name]
                    metrics[bps_name] = bits_per_spike(sums[name], torch.tensor(null_sum, dtype=torch.float64), spikes)
        if r2_parts and len(r2_parts) == len(self.splits):
            neurons = sum(n for _, n in r2_parts)
            metrics["r2"] = sum(value * (n / neurons) for value, n in r2_parts)
        l2 = self.model.l2_penalty(self._l2_scales()).double().cpu()
        kl_ramp = ramp(self.epoch, train.kl_start_epoch, train.kl_increase_epoch)
        l2_ramp = ramp(self.epoch, train.l2_start_epoch, train.l2_increase_epoch)
        hp = {name: value.double().cpu() for name, value in self.hp.items()}
        metrics["loss"] = total_loss(
            metrics["recon"],
            metrics["kl_ic"],
            metrics["kl_co"],
            l2,
            hp["kl_ic_weight"],
            hp["kl_co_weight"],
            kl_ramp,
            l2_ramp,
            train.loss_scale,
        )
        prefix = "val_" if split_name == "valid" else f"{split_name}_"
        return {prefix + name: value.float() for name, value in metrics.items()}

    @torch.no_grad()
    def nlb_metrics(self) -> dict[str, torch.Tensor]:
        """NLB's metrics (nlb_co_bps, nlb_vel_r2 or nlb_tp_corr, nlb_psth_r2, nlb_fp_bps) of each member's
        posterior-mean rates (no sampling, no dropout) against data.nlb_targets; NaN for a member whose rates
        are not finite."""
        if self.nlb_targets is None:
            self.nlb_targets = self._load_nlb_targets()
        self.model.eval()
        no_dropout = torch.zeros(self.population_size, device=self.device)
        rates = {}
        for name, split in self.splits[0].items():
            batches = []
            for indices in torch.arange(split.n_trials, device=self.device).split(self.config.train.batch_size):
                ext_input = None if split.ext_input is None else split.ext_input[indices]
                batches.append(self.model(split.encod[indices], no_dropout, ext_input).rates.float().cpu())
            rates[name] = (split.inds, torch.cat(batches, dim=1).numpy())
        rows = []
        for member in range(self.population_size):
            member_rates = {name: (inds, values[member]) for name, (inds, values) in rates.items()}
            finite = all(np.isfinite(values).all() for _, values in member_rates.values())
            rows.append(
                score(self.nlb_targets, submission_from_rates(member_rates, self.nlb_targets)) if finite else {}
            )
        names = dict.fromkeys(name for row in rows for name in row)
        return {
            f"nlb_{NLB_METRIC_NAMES[name]}": torch.tensor([row.get(name, math.nan) for row in rows]) for name in names
        }

    def _end_epoch(self, metrics: dict[str, torch.Tensor]) -> None:
        train = self.config.train
        current = torch.where(self.diverged, math.nan, metrics["val_nll_heldin"])
        self.smth_metric = smooth(self.smth_metric, current)
        metrics[METRIC] = self.smth_metric.clone()
        if "val_recon_sampled" in metrics:
            self.smth_sampled = smooth(
                self.smth_sampled, torch.where(self.diverged, math.nan, metrics["val_recon_sampled"])
            )
            metrics[SAMPLED_METRIC] = self.smth_sampled.clone()
        ramps_done = self.epoch >= self.ramp_end_epoch
        improved = ramps_done & (self.smth_metric < self.best_metric)
        self.best_metric = torch.where(improved, self.smth_metric, self.best_metric)
        self.best_epoch = torch.where(improved, self.epoch, self.best_epoch)
        metrics["improved"] = improved.float()
        if train.lr_schedule and train.lr_rule == "plateau":
            better = self.smth_metric < self.lr_best_metric
            self.lr_best_metric = torch.where(better, self.smth_metric, self.lr_best_metric)
            self.plateau_epochs = torch.where(better, 0, self.plateau_epochs + 1)
            decay = (
                self.plateau_epochs > train.lr_patience
            )  # torch's ReduceLROnPlateau (lfads-torch): patience bad epochs are tolerated
            self.lr = torch.where(decay.to(self.device), self.lr * train.lr_decay, self.lr)
            self.plateau_epochs = torch.where(decay, 0, self.plateau_epochs)
            self.stopped |= (self.lr < train.lr_stop).cpu()
        elif train.lr_schedule:  # lfads-tf2's update_learning_rate; it stops once an epoch has trained at lr_stop
            self.stopped |= (self.lr <= train.lr_stop).cpu()
            current = torch.where(self.diverged, math.nan, metrics["val_loss"])
            self.val_loss_window = torch.cat([self.val_loss_window[:, 1:], current[:, None]], dim=1)
            self.epochs_at_lr += 1
            before = self.val_loss_window[:, :-1]
            worst = torch.where(torch.isnan(before), -math.inf, before).amax(1)  # pandas' max skips NaN
            decay = (
                (self.epoch >= self.ramp_end_epoch + train.lr_patience)
                & (self.epochs_at_lr >= train.lr_patience)
                & (current > worst)
                & ~torch.isnan(before).all(1)
            )
            self.lr = torch.where(decay.to(self.device), (self.lr * train.lr_decay).clamp_min(train.lr_stop), self.lr)
            self.epochs_at_lr = torch.where(decay, 0, self.epochs_at_lr)
        if ramps_done:
            since_best = self.epoch - torch.clamp(self.best_epoch, min=self.ramp_end_epoch)
            self.stopped |= since_best >= train.patience
        for member in range(self.population_size):
            row = {"epoch": self.epoch, "member": member}
            row.update({name: float(value[member]) for name, value in metrics.items() if name != "improved"})
            self.history.append(row)

    # ---------------------------------------------------------------- state for checkpoints
    _STATE_TENSORS = (
        "smth_metric",
        "smth_sampled",
        "best_metric",
        "lr_best_metric",
        "best_epoch",
        "plateau_epochs",
        "val_loss_window",
        "epochs_at_lr",
        "stopped",
        "diverged",
    )

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "trainer": {
                "epoch": self.epoch,
                "lr": self.lr.cpu().clone(),
                "members": [dict(values) for values in self.members],
                **{name: getattr(self, name).clone() for name in self._STATE_TENSORS},
            },
            "rng": {"members": self.model.rng.get_state(), "data": self.data_rng.get_state()},
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        trainer = state["trainer"]
        self.epoch = int(trainer["epoch"])
        self.lr = trainer["lr"].to(self.device).clone()
        self.members = [dict(values) for values in trainer["members"]]
        self.hp = self._hp_tensors()
        for name in self._STATE_TENSORS:
            setattr(self, name, trainer[name].clone())
        self.model.rng.set_state(state["rng"]["members"])
        self.data_rng.set_state(state["rng"]["data"])
        self.history = list(state["history"])

    # ---------------------------------------------------------------- helpers
    def _load_nlb_targets(self) -> Targets:
        """data.nlb_targets, checked against the data: the same trials, bins and neurons."""
        path = self.config.data.nlb_targets
        if path is None:
            raise ConfigError("NLB metrics need data.nlb_targets: the targets file of `autolfads data nlb`")
        targets = read_targets(path)
        cfg = self.session_cfgs[0]
        shape = (targets.trial_bins + targets.forward_bins, targets.heldin + targets.heldout, targets.heldin)
        known = np.concatenate([split.inds for split in self.splits[0].values()])
        missing = np.setdiff1d(np.concatenate([targets.train_ids, targets.eval_ids]), known)
        if shape != (cfg.recon_seq_len, cfg.recon_dim, cfg.encod_dim) or missing.size:
            raise ConfigError(
                f"data.nlb_targets {path} ({targets.name}: {shape[0]} bins, {shape[2]}+{shape[1] - shape[2]} neurons) does not belong to the data "
                f"{self.sessions[0].path} ({cfg.recon_seq_len} bins, {cfg.encod_dim}+{cfg.cs_dim} neurons"
                + (f", no trial {int(missing[0])})" if missing.size else ")")
            )
        return targets

    def _l2_scales(self) -> dict[str, torch.Tensor]:
        return {group: self.hp[f"l2_{group}_scale"] for group in ("ic_enc", "ci_enc", "gen", "con")}

    def _to_device(self, split: Split) -> Split:
        def move(t):
            return None if t is None else t.to(self.device)

        return replace(
            split,
            encod=move(split.encod),
            recon=move(split.recon),
            ext_input=move(split.ext_input),
            truth=move(split.truth),
        )

    def _sv_weight(self, session: int, split: Split) -> torch.Tensor | None:
        cfg = self.config.model
        if cfg.sv_rate == 0:
            return None
        key = (session, split.name)
        if key not in self._sv_weights:
            # One fixed mask per session and split, seeded by sv_seed, the split's name and the session.
            seed = cfg.sv_seed * 3 + ("train", "valid", "test").index(split.name) + 100_003 * session
            mask = sample_validation_mask(tuple(split.encod.shape), cfg.sv_rate, seed, cfg.ic_enc_seq_len).to(
                self.device
            )
            weight = mask / (1 - cfg.sv_rate)
            weight[:, : cfg.ic_enc_seq_len] = 1.0
            self._sv_weights[key] = weight
        return self._sv_weights[key]

    def _batch(self, session: int, split: Split, indices: torch.Tensor) -> Batch:
        indices = indices.to(self.device)

        def take(t):
            return None if t is None else t[indices]

        return Batch(
            split.encod[indices],
            split.recon[indices],
            take(split.ext_input),
            take(split.truth),
            take(self._sv_weight(session, split)),
        )

    def _augment(self, batch: Batch, cfg: ModelConfig) -> Batch:
        """Temporal shift and spike jitter (model.temporal_shift_*, model.spike_jitter_width) of a training
        batch, member by member: targets and inputs become (P, B, T, N), inputs the targets' leading part."""
        shift = cfg.temporal_shift_std > 0 and cfg.temporal_shift_max > 0
        if not shift and cfg.spike_jitter_width == 0:
            return batch
        recon = batch.recon
        if cfg.spike_jitter_width:
            recon = spike_jitter(recon, cfg.spike_jitter_width, self.model.rng)
        if shift:
            recon = temporal_shift(recon, cfg.temporal_shift_std, cfg.temporal_shift_max, self.model.rng)
        encod = torch.nan_to_num(recon[..., : cfg.encod_seq_len, : cfg.encod_dim], nan=0.0)
        return Batch(encod, recon, batch.ext_input, batch.truth, batch.sv_weight)

    def _check_augmentations(self, session: int) -> None:
        cfg = self.session_cfgs[session]
        if cfg.spike_jitter_width and cfg.reconstruction != "poisson":
            raise ConfigError(
                f"model.spike_jitter_width moves spikes and needs spike counts (model.reconstruction poisson), not {cfg.reconstruction}; use model.temporal_shift_std for continuous data"
            )
        if not (cfg.spike_jitter_width or (cfg.temporal_shift_std > 0 and cfg.temporal_shift_max > 0)):
            return
        split = self.splits[session]["train"]
        leading = torch.nan_to_num(split.recon[:, : cfg.encod_seq_len, : cfg.encod_dim], nan=0.0)
        if not torch.equal(leading, split.encod):
            raise ConfigError(
                f"temporal shift / spike jitter need encoder inputs equal to the leading bins and neurons of the reconstruction targets, which {self.sessions[session].path} does not have"
            )

    @staticmethod
    def _null_nll(cfg: ModelConfig, split: Split) -> dict[str, tuple[float, float]]:
        """Null-model NLL sums and spike counts per region: the data-only half of bits per spike."""
        recon = split.recon.double().cpu()
        start, t_enc, n_enc = cfg.loss_start_bin, cfg.encod_seq_len, cfg.encod_dim
        regions = {
            "nll_heldin": recon[:, start:t_enc, :n_enc],
            "nll_heldout": recon[:, start:t_enc, n_enc:],
            "nll_fp": recon[:, t_enc:],
        }
        return {name: _null_nll_observed(counts) for name, counts in regions.items() if counts.numel() > 0}

    def _region_counts(self, session: int, split: Split, regions: dict) -> dict[str, float]:
        counts = {}
        for name, (bins, neurons) in regions.items():
            counts[name] = float(torch.isfinite(split.recon[:, bins, neurons]).sum())  # observed entries (SBTT)
        weight = self._sv_weight(session, split)
        if weight is not None:
            held_back = float((weight[:, : self.config.model.encod_seq_len] == 0).sum())
            counts["sv_nll"] = max(held_back, 1.0)
            counts["nll_heldin"] -= held_back
        return counts


def _null_nll_observed(counts: torch.Tensor) -> tuple[float, float]:
    """Null NLL sum and spike count of a region; NaN (missing, SBTT) entries count nowhere."""
    observed = ~torch.isnan(counts)
    if bool(observed.all()):
        return null_nll_sum(counts), float(counts.sum())
    filled = torch.nan_to_num(counts, nan=0.0)
    rates = (filled.sum((0, 1)) / observed.sum((0, 1)).clamp_min(1)).expand_as(counts)
    return float((poisson_nll(rates, filled) * observed).sum()), float(filled.sum())
