"""A population's state: what a Trainer holds, member by member, as one named object.

Every tensor of the model, the optimizer and the training state has a leading member axis; the member
hyperparameters and random streams are lists with one entry per member; the history's rows name their
member. So a search can hold its population in slices (one per worker process or Ray trial), join them into
one state for its checkpoint, copy a member into another across slices (a PBT exploit), give a member new
hyperparameters, and cut the slices out again. Everything here is pure: no processes, no files. A checkpoint
holds `to_dict()` beside its config; `from_dict` reads it back (other keys are ignored).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields

import torch

from ..config import Config, with_member_hparams
from .member_state import MEMBER_STATE_FIELDS  # the per-member tensors of the training state


@dataclass
class PopulationState:
    model: dict[str, torch.Tensor]  # parameter name -> (P, ...) tensor
    optimizer: dict  # PopulationAdam's: "steps" (P,), "exp_avg" and "exp_avg_sq" lists of (P, ...) tensors
    trainer: dict  # "epoch", "members" (P hyperparameter dicts), and MemberState's (P, ...) tensors
    rng: dict  # "members": P generator states; "data": the batch order's generator state
    history: list[dict]  # metrics.csv's rows, each naming its member

    @classmethod
    def from_dict(cls, saved: Mapping) -> PopulationState:
        """From a checkpoint (its config and any other keys stay behind)."""
        return cls(**{name: saved[name] for name in STATE_KEYS})

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in STATE_KEYS}

    @property
    def size(self) -> int:
        return len(self.trainer["members"])

    @property
    def epoch(self) -> int:
        return int(self.trainer["epoch"])

    @property
    def hparams(self) -> list[dict[str, float]]:
        """Each member's hyperparameters (copies)."""
        return [dict(values) for values in self.trainer["members"]]

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor with a leading member axis: what an exploit copies."""
        return [
            *self.model.values(),
            self.optimizer["steps"],
            *self.optimizer["exp_avg"],
            *self.optimizer["exp_avg_sq"],
            *(self.trainer[name] for name in MEMBER_STATE_FIELDS),
        ]

    def select(self, members: Iterable[int]) -> PopulationState:
        """The state of a Trainer holding just `members` (renumbered 0..k-1, in this order); tensors are copies."""
        members = list(members)
        index = torch.tensor(members, dtype=torch.long)
        renumber = {member: position for position, member in enumerate(members)}

        def take(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.index_select(0, index.to(tensor.device)).clone()

        return PopulationState(
            model={name: take(tensor) for name, tensor in self.model.items()},
            optimizer={
                "steps": take(self.optimizer["steps"]),
                "exp_avg": [take(t) for t in self.optimizer["exp_avg"]],
                "exp_avg_sq": [take(t) for t in self.optimizer["exp_avg_sq"]],
            },
            trainer={
                "epoch": self.trainer["epoch"],
                "members": [dict(self.trainer["members"][m]) for m in members],
                **{name: take(self.trainer[name]) for name in MEMBER_STATE_FIELDS},
            },
            rng={"members": [self.rng["members"][m].clone() for m in members], "data": self.rng["data"].clone()},
            history=[{**row, "member": renumber[row["member"]]} for row in self.history if row["member"] in renumber],
        )

    def without_history(self) -> PopulationState:
        """The same state with an empty history (what a worker gets: the driver keeps the search's history)."""
        return PopulationState(self.model, self.optimizer, self.trainer, self.rng, [])

    @classmethod
    def join(cls, slices: Sequence[PopulationState], members: Sequence[Sequence[int]]) -> PopulationState:
        """One state from slices that hold `members[i]` (global indices, together every member once) each.
        The slices must be at the same epoch with the same data stream (every member sees the same batches)."""
        order = [member for part in members for member in part]
        if sorted(order) != list(range(len(order))):
            raise ValueError(f"the slices hold members {order}, not each of 0..{len(order) - 1} once")
        first = slices[0]
        for part in slices[1:]:
            if part.epoch != first.epoch or not torch.equal(part.rng["data"], first.rng["data"]):
                raise ValueError("the slices are at different epochs or data streams")
        inverse = torch.argsort(torch.tensor(order, dtype=torch.long))  # position of member m in the concatenation

        def cat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
            return torch.cat(list(tensors)).index_select(0, inverse.to(tensors[0].device))

        def by_member(lists: Iterable[list]) -> list:
            flat = [item for items in lists for item in items]
            return [flat[i] for i in inverse.tolist()]

        optimizers = [part.optimizer for part in slices]
        history = [
            {**row, "member": part_members[row["member"]]}
            for part, part_members in zip(slices, members, strict=True)
            for row in part.history
        ]
        return cls(
            model={name: cat([part.model[name] for part in slices]) for name in first.model},
            optimizer={
                "steps": cat([o["steps"] for o in optimizers]),
                "exp_avg": [cat(ts) for ts in zip(*(o["exp_avg"] for o in optimizers), strict=True)],
                "exp_avg_sq": [cat(ts) for ts in zip(*(o["exp_avg_sq"] for o in optimizers), strict=True)],
            },
            trainer={
                "epoch": first.trainer["epoch"],
                "members": by_member(part.trainer["members"] for part in slices),
                **{name: cat([part.trainer[name] for part in slices]) for name in MEMBER_STATE_FIELDS},
            },
            rng={"members": by_member(part.rng["members"] for part in slices), "data": first.rng["data"]},
            history=sorted(history, key=lambda row: (row["epoch"], row["member"])),
        )

    def copy_member(self, source: int, target: int) -> None:
        """PBT exploit, in place: `target` takes `source`'s weights, Adam state, training state and hyperparameters;
        its own random stream and history stay. New hyperparameters follow with set_hparams."""
        for tensor in self.tensors():
            tensor[target] = tensor[source]
        self.trainer["members"][target] = dict(self.trainer["members"][source])

    def set_hparams(self, member: int, values: Mapping[str, float], config: Config) -> None:
        """New hyperparameters for one member, in place, checked against `config` (a bad value raises ConfigError
        naming it); a new lr_init restarts the member's learning rate there."""
        updated = {**self.trainer["members"][member], **{name: float(value) for name, value in values.items()}}
        with_member_hparams(config, updated)
        self.trainer["members"][member] = updated
        if "lr_init" in values:
            self.trainer["lr"][member] = updated["lr_init"]

    def checksum(self, member: int) -> str:
        """SHA-256 (16 hex digits) of one member's weights, Adam moments and step count: equal exactly when copied."""
        one = self.select([member])
        digest = hashlib.sha256()
        for tensor in [
            *(one.model[name] for name in sorted(one.model)),
            one.optimizer["steps"],
            *one.optimizer["exp_avg"],
            *one.optimizer["exp_avg_sq"],
        ]:
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


STATE_KEYS = tuple(field.name for field in fields(PopulationState))
