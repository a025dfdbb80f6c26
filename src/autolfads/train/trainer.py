"""Training a population of P LFADS models: a short, explicit loop over epochs and batches.

The Trainer owns the model, optimizer and training state, and reads and writes no file: the caller
(`train.run`, the search backends) passes the data and the NLB targets in and writes checkpoints, logs and
outputs around it. P = 1 is an ordinary single-model run. The training step is `train_step`; validation is
in `validation`, NLB scoring in `nlb_scoring`, the end-of-epoch rules in `schedule`.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..config import Config, ModelConfig, member_hparams, with_member_hparams
from ..data.dataset import LFADSData
from ..errors import ConfigError
from ..evaluate import Targets
from ..model import LFADS
from ..model.augmentations import coordinated_dropout, sbtt_targets
from ..model.cores import Core, pick_core
from ..model.readin_readout import pcr_session_inits
from ..names import MEMBER_HPARAMS
from .batches import Batch, SampleValidation, augment, check_augmentations, take_batch, to_device
from .member_state import MemberState
from .nlb_scoring import check_nlb_targets, nlb_metrics
from .objective import ramp, reconstruction_loss, total_loss
from .optim import PopulationAdam, clip_member_grad_norms
from .population_state import PopulationState
from .schedule import end_epoch
from .validation import ValidationSessions, evaluate, l2_scales, null_nll_of_split


def weighted_mean(means: Sequence[torch.Tensor], sizes: Sequence[int]) -> torch.Tensor:
    """The mean over all parts from each part's mean and size (exactly the part's mean when there is one)."""
    total = sum(sizes)
    return sum(mean * (size / total) for mean, size in zip(means, sizes, strict=True))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
        nlb_targets: Targets | None = None,
    ):
        """config: resolved against the data (dimensions set). data: one session, or the sessions of a
        stitched model in the order of model.sessions. population: per-member hyperparameter values
        overriding the config's (one mapping per member; default one member with the config's values).
        nlb_targets: data.nlb_targets as read by `nlb_scoring.load_nlb_targets`, for NLB metrics."""
        self.config = config
        self.sessions = [data] if isinstance(data, LFADSData) else list(data)
        _check_config(config, len(self.sessions))
        self.session_cfgs = [config.model.session(s) for s in range(len(self.sessions))]
        train = config.train
        self.members = [dict(member_hparams(config), **(values or {})) for values in (population or [{}])]
        for values in self.members:
            with_member_hparams(config, values)  # validates ranges member by member
        seeds = list(member_seeds) if member_seeds is not None else seeds_of(train.seed, range(len(self.members)))
        if len(seeds) != len(self.members):
            raise ValueError(f"{len(self.members)} members but {len(seeds)} seeds")
        self.device = resolve_device(train.device)
        self.core, self.core_note = pick_core(train.recurrent_core, self.device)
        self.model = new_model(config, self.sessions, seeds, self.device, self.core)
        self.params = [param for param in self.model.parameters() if param.requires_grad]  # fixed read-ins are not
        self.optimizer = PopulationAdam(
            self.params, eps=train.adam_epsilon, weight_decay=train.weight_decay, epsilon_hat=train.adam_epsilon_hat
        )
        self.hp = self._hp_tensors()  # self.members' exact values as (P,) tensors for the computation
        self.state = MemberState.new(self.hp["lr_init"], train.lr_patience)
        self.epoch = 0  # epochs completed
        self.data_rng = torch.Generator().manual_seed(train.seed + 7_919)
        self.history: list[dict[str, float]] = []
        # splits[session][name]: every split with reconstruction targets, on the device
        self.splits = [
            {split.name: to_device(split, self.device) for split in session.splits if split.recon is not None}
            for session in self.sessions
        ]
        self.sample_validation = SampleValidation(config.model, self.device)
        self.null_nll = [
            {name: null_nll_of_split(cfg, split) for name, split in splits.items()}
            for cfg, splits in zip(self.session_cfgs, self.splits, strict=True)
        ]
        for cfg, splits, session in zip(self.session_cfgs, self.splits, self.sessions, strict=True):
            check_augmentations(cfg, splits["train"], session.path)
        if nlb_targets is not None:
            check_nlb_targets(
                nlb_targets, config.data.nlb_targets, self.session_cfgs[0], self.splits[0], self.sessions[0].path
            )
        self.nlb_targets = nlb_targets
        self.ramp_end_epoch = max(
            train.kl_start_epoch + train.kl_increase_epoch, train.l2_start_epoch + train.l2_increase_epoch
        )

    @property
    def population_size(self) -> int:
        return self.model.population_size

    # Per-member state the callers read (run.py, the search backends, tests).
    @property
    def lr(self) -> torch.Tensor:
        return self.state.lr

    @property
    def stopped(self) -> torch.Tensor:
        return self.state.stopped

    @property
    def diverged(self) -> torch.Tensor:
        return self.state.diverged

    @property
    def best_epoch(self) -> torch.Tensor:
        return self.state.best_epoch

    @property
    def best_metric(self) -> torch.Tensor:
        return self.state.best_metric

    @property
    def smth_metric(self) -> torch.Tensor:
        return self.state.smth_metric

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
        self.state, added = end_epoch(self.state, metrics, self.epoch, self.config.train, self.ramp_end_epoch)
        metrics.update(added)
        for member in range(self.population_size):
            row = {"epoch": self.epoch, "member": member}
            row.update({name: float(value[member]) for name, value in metrics.items() if name != "improved"})
            self.history.append(row)
        self.epoch += 1
        return metrics

    def train_epoch(self) -> dict[str, torch.Tensor]:
        """One pass over the training trials in a fresh random order; the mean of each step's metrics."""
        train = self.config.train
        kl_ramp = ramp(self.epoch, train.kl_start_epoch, train.kl_increase_epoch)
        l2_ramp = ramp(self.epoch, train.l2_start_epoch, train.l2_increase_epoch)
        self.optimizer.weight_decay = train.weight_decay * l2_ramp  # lfads-torch ramps weight decay with the L2 penalty
        # One order over every session's trials: a batch mixes sessions in proportion to their trials.
        n_trials = sum(splits["train"].n_trials for splits in self.splits)
        order = torch.randperm(n_trials, generator=self.data_rng)
        if train.drop_last and n_trials > train.batch_size:
            order = order[: n_trials - n_trials % train.batch_size]
        self.model.train()
        totals: dict[str, torch.Tensor] = {}
        for indices in order.split(train.batch_size):
            for name, value in self.train_step(indices, kl_ramp, l2_ramp).items():
                totals[name] = totals.get(name, 0) + value.detach().cpu().double() * len(indices)
        metrics = {name: (total / len(order)).float() for name, total in totals.items()}
        metrics["kl_ramp"] = torch.full((self.population_size,), kl_ramp)
        metrics["l2_ramp"] = torch.full((self.population_size,), l2_ramp)
        metrics["lr"] = self.state.lr.detach().cpu().clone()
        return metrics

    def train_step(self, indices: torch.Tensor, kl_ramp: float, l2_ramp: float) -> dict[str, torch.Tensor]:
        """One optimizer step of every member on the trials `indices` (numbered over all sessions in order)."""
        train = self.config.train
        sizes = torch.tensor([splits["train"].n_trials for splits in self.splits])
        starts = torch.cumsum(sizes, 0) - sizes
        session_of = torch.bucketize(indices, starts, right=True) - 1
        sessions = [s for s in range(len(self.splits)) if bool((session_of == s).any())]
        parts = [self._training_part(s, indices[session_of == s] - starts[s]) for s in sessions]
        params, kl_ic, kl_co = self.model.forward_sessions(
            [p.inputs for p in parts], sessions, self.hp["dropout_rate"], [p.batch.ext_input for p in parts]
        )
        nlls = [self._training_nll(part, part_params) for part, part_params in zip(parts, params, strict=True)]
        # Means over the whole batch: each part weighs by its share of the batch's elements.
        recon = weighted_mean(
            [
                reconstruction_loss(nll, part.grad_mask, part.batch.sv_weight, part.cfg.loss_start_bin)
                for nll, part in zip(nlls, parts, strict=True)
            ],
            [nll[0].numel() for nll in nlls],
        )
        heldins = [
            nll[:, :, part.cfg.loss_start_bin : part.cfg.encod_seq_len, : part.cfg.encod_dim].detach()
            for nll, part in zip(nlls, parts, strict=True)
        ]
        heldin = weighted_mean([h.mean((1, 2, 3)) for h in heldins], [h[0].numel() for h in heldins])
        l2 = self.model.l2_penalty(l2_scales(self.hp))
        hp = self.hp
        loss = total_loss(recon, kl_ic, kl_co, l2, hp, kl_ramp, l2_ramp, train.loss_scale)
        self.optimizer.zero_grad()
        loss.sum().backward()  # members share no weights: each gets exactly its own gradient
        grad_norm = clip_member_grad_norms(self.params, train.max_grad_norm)
        self.state.diverged |= ~torch.isfinite(loss.detach()).cpu()
        active = ~self.state.diverged.to(self.device) & torch.isfinite(grad_norm)
        self.optimizer.step(self.state.lr, active)
        return {
            "loss": loss,
            "recon": recon,
            "nll_heldin": heldin,
            "kl_ic": kl_ic,
            "kl_co": kl_co,
            "l2": l2,
            "grad_norm": grad_norm,
        }

    def _training_part(self, session: int, indices: torch.Tensor) -> TrainingPart:
        """One session's trials of a training batch, augmented, with coordinated dropout applied."""
        cfg = self.session_cfgs[session]
        split = self.splits[session]["train"]
        batch = augment(take_batch(split, indices, self.sample_validation.weight(session, split)), cfg, self.model.rng)
        inputs, grad_mask = coordinated_dropout(
            batch.masked_encod(), self.hp["cd_rate"], cfg.cd_pass_rate, self.model.rng, cfg.ic_enc_seq_len
        )
        return TrainingPart(cfg, batch, inputs, grad_mask)

    def _training_nll(self, part: TrainingPart, params: torch.Tensor) -> torch.Tensor:
        """Element-wise NLL (P, B, T, N); missing bins (SBTT) give none, the rest re-weighted by 1 / (1 - missing)."""
        target, sbtt_weight = sbtt_targets(part.batch.recon)
        nll = self.model.reconstruction.nll(params, target)
        return nll if sbtt_weight is None else nll * sbtt_weight

    def evaluate(self, split_name: str) -> dict[str, torch.Tensor]:
        """Validation metrics of every member on one split (see `validation.evaluate`)."""
        sessions = ValidationSessions(self.session_cfgs, self.splits, self.null_nll, self.sample_validation.weight)
        return evaluate(self.model, self.hp, sessions, split_name, self.config.train, self.epoch)

    def nlb_metrics(self) -> dict[str, torch.Tensor]:
        """NLB's metrics of each member's posterior-mean rates against the targets given to the Trainer."""
        if self.nlb_targets is None:
            raise ConfigError("NLB metrics need data.nlb_targets: the targets file of `autolfads data nlb`")
        return nlb_metrics(self.model, self.splits[0], self.nlb_targets, self.config.train.batch_size)

    # ---------------------------------------------------------------- state for checkpoints and searches
    def population_state(self) -> PopulationState:
        members = self.state.to_dict()
        return PopulationState(
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            trainer={
                "epoch": self.epoch,
                "lr": members.pop("lr"),
                "members": [dict(values) for values in self.members],
                **members,
            },
            rng={"members": self.model.rng.get_state(), "data": self.data_rng.get_state()},
            history=list(self.history),
        )

    def load_population_state(self, state: PopulationState) -> None:
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.epoch = state.epoch
        self.members = state.hparams
        self.hp = self._hp_tensors()
        self.state = MemberState.from_dict(state.trainer, self.device)
        self.model.rng.set_state(state.rng["members"])
        self.data_rng.set_state(state.rng["data"])
        self.history = list(state.history)


def new_model(
    config: Config, sessions: Sequence[LFADSData], seeds: Sequence[int], device: torch.device, core: Core
) -> LFADS:
    """A fresh model of len(seeds) members (a stitched model's read-ins initialised by PCR where asked)."""
    model = LFADS(config.model, seeds, device, core=core)
    if config.model.multisession and config.model.readin_init == "pcr":
        model.init_sessions(pcr_session_inits(sessions, config.model, model.reconstruction))
    return model


def sampling_model(config: Config, sessions: Sequence[LFADSData], state: PopulationState) -> LFADS:
    """The model of a population state, to sample from: the weights and random streams a Trainer loaded with the
    state holds, without the optimizer, training state and data a Trainer would build besides."""
    _check_config(config, len(sessions))
    device = resolve_device(config.train.device)
    seeds = seeds_of(config.train.seed, range(state.size))
    model = new_model(config, sessions, seeds, device, pick_core(config.train.recurrent_core, device)[0])
    model.load_state_dict(state.model)
    model.rng.set_state(state.rng["members"])
    return model


def seeds_of(seed: int, members: Iterable[int]) -> list[int]:
    """Member m's random streams (initialisation, dropout, sampling) are seeded train.seed + m, wherever it
    trains: alone, in a population, in any worker or Ray trial."""
    return [seed + int(member) for member in members]


def _check_config(config: Config, sessions: int) -> None:
    if sessions != config.model.n_sessions:
        raise ConfigError(f"the config is resolved for {config.model.n_sessions} session(s) but {sessions} were given")
    if config.train.nlb_every and config.data.nlb_targets is None:
        raise ConfigError("train.nlb_every needs data.nlb_targets: the targets file of `autolfads data nlb`")
    if config.model.multisession and (config.train.nlb_every or config.data.nlb_targets is not None):
        raise ConfigError(
            "NLB metrics (train.nlb_every, data.nlb_targets) score one NLB session; this model stitches several"
        )
