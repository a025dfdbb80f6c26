"""A population's state dict (Trainer.state_dict) taken apart and put together member by member.

Every tensor of the model, the optimizer and the training state has a leading member axis; the member
hyperparameters and random streams are lists with one entry per member; the history's rows name their
member. So a search can hold its population in slices (one per worker process), join them into one state
for its checkpoint, copy a member into another across slices (a PBT exploit), and cut the slices out again.
These are pure functions of plain dicts: no processes, no files.
"""

from collections.abc import Sequence

import torch

from .member_state import MEMBER_STATE_FIELDS  # the per-member tensors of state["trainer"]


def member_tensors(state: dict) -> list[torch.Tensor]:
    """Every tensor with a leading member axis."""
    optimizer, trainer = state["optimizer"], state["trainer"]
    return [
        *state["model"].values(),
        optimizer["steps"],
        *optimizer["exp_avg"],
        *optimizer["exp_avg_sq"],
        *(trainer[name] for name in MEMBER_STATE_FIELDS),
    ]


def select_members(state: dict, members: Sequence[int]) -> dict:
    """The state of a Trainer holding just `members` (renumbered 0..k-1, in this order); tensors are copies."""
    members = list(members)
    index = torch.tensor(members, dtype=torch.long)
    renumber = {member: position for position, member in enumerate(members)}

    def take(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.index_select(0, index.to(tensor.device)).clone()

    optimizer, trainer = state["optimizer"], state["trainer"]
    return {
        "model": {name: take(tensor) for name, tensor in state["model"].items()},
        "optimizer": {
            "steps": take(optimizer["steps"]),
            "exp_avg": [take(t) for t in optimizer["exp_avg"]],
            "exp_avg_sq": [take(t) for t in optimizer["exp_avg_sq"]],
        },
        "trainer": {
            "epoch": trainer["epoch"],
            "members": [dict(trainer["members"][m]) for m in members],
            **{name: take(trainer[name]) for name in MEMBER_STATE_FIELDS},
        },
        "rng": {"members": [state["rng"]["members"][m].clone() for m in members], "data": state["rng"]["data"].clone()},
        "history": [
            {**row, "member": renumber[row["member"]]} for row in state["history"] if row["member"] in renumber
        ],
    }


def join_members(slices: Sequence[dict], members: Sequence[Sequence[int]]) -> dict:
    """One state from slices that hold `members[i]` (global indices, together every member once) each.
    The slices must be at the same epoch with the same data stream (every member sees the same batches)."""
    order = [member for part in members for member in part]
    if sorted(order) != list(range(len(order))):
        raise ValueError(f"the slices hold members {order}, not each of 0..{len(order) - 1} once")
    first = slices[0]
    for part in slices[1:]:
        if part["trainer"]["epoch"] != first["trainer"]["epoch"] or not torch.equal(
            part["rng"]["data"], first["rng"]["data"]
        ):
            raise ValueError("the slices are at different epochs or data streams")
    inverse = torch.argsort(torch.tensor(order, dtype=torch.long))  # position of member m in the concatenation

    def cat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(tensors)).index_select(0, inverse.to(tensors[0].device))

    def by_member(lists: Sequence[list]) -> list:
        flat = [item for items in lists for item in items]
        return [flat[i] for i in inverse.tolist()]

    optimizer = [part["optimizer"] for part in slices]
    trainer = [part["trainer"] for part in slices]
    history = [
        {**row, "member": part_members[row["member"]]}
        for part, part_members in zip(slices, members, strict=True)
        for row in part["history"]
    ]
    return {
        "model": {name: cat([part["model"][name] for part in slices]) for name in first["model"]},
        "optimizer": {
            "steps": cat([o["steps"] for o in optimizer]),
            "exp_avg": [cat(ts) for ts in zip(*(o["exp_avg"] for o in optimizer), strict=True)],
            "exp_avg_sq": [cat(ts) for ts in zip(*(o["exp_avg_sq"] for o in optimizer), strict=True)],
        },
        "trainer": {
            "epoch": first["trainer"]["epoch"],
            "members": by_member([t["members"] for t in trainer]),
            **{name: cat([t[name] for t in trainer]) for name in MEMBER_STATE_FIELDS},
        },
        "rng": {"members": by_member([part["rng"]["members"] for part in slices]), "data": first["rng"]["data"]},
        "history": sorted(history, key=lambda row: (row["epoch"], row["member"])),
    }


def copy_member(state: dict, source: int, target: int) -> None:
    """PBT exploit, in place: `target` takes `source`'s weights, Adam state, training state and hyperparameters;
    its own random stream and history stay (as Trainer.copy_member)."""
    for tensor in member_tensors(state):
        tensor[target] = tensor[source]
    state["trainer"]["members"][target] = dict(state["trainer"]["members"][source])


def set_member_hparams(state: dict, member: int, values: dict[str, float]) -> None:
    """New hyperparameters for one member, in place (after copy_member; as Trainer.set_member_hparams)."""
    state["trainer"]["members"][member] = {
        **state["trainer"]["members"][member],
        **{name: float(value) for name, value in values.items()},
    }
    if "lr_init" in values:
        state["trainer"]["lr"][member] = float(values["lr_init"])
