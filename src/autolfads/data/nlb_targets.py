"""NLB evaluation targets: what a model is scored against, and their file (written by `autolfads data nlb`).

The file is nlb_tools' target layout, so nlb_tools' evaluate() reads it as is: one group per data set
(mc_maze, mc_maze_20, ...) with eval_spikes_heldout, train_behavior, ..., plus train_trial_ids and
eval_trial_ids (NLB trial ids, to match model rates to trials) and the attributes nlb_dataset and bin_ms.
Data preparation writes it and evaluation reads it, so it lives with the data and needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import DataError
from .hdf5 import KIND_ATTR, write_lfads_h5

NLB_PSTH_DATASETS = (
    "mc_maze",
    "area2_bump",
    "dmfc_rsg",
    "mc_maze_large",
    "mc_maze_medium",
    "mc_maze_small",
)  # those NLB scores psth R2 on


@dataclass(frozen=True, eq=False)
class Targets:
    """Evaluation targets of one NLB data set at one bin size (what make_eval_target_tensors returns), and the
    NLB trial ids of their train and eval trials."""

    name: str  # the submission's group: the data set, plus "_20" etc. for bins other than 5 ms
    dataset: str  # mc_maze, ..., dmfc_rsg
    bin_ms: int
    arrays: dict[str, np.ndarray]
    train_ids: np.ndarray
    eval_ids: np.ndarray
    # trial bins, forward bins, held-in and held-out neurons; None: read from NLB's arrays. Given when some
    # arrays are left out because the data lack them (their metrics are then not available).
    shape: tuple[int, int, int, int] | None = None

    @property
    def heldin(self) -> int:
        return self.shape[2] if self.shape else int(self.arrays["eval_spikes_heldin_forward"].shape[2])

    @property
    def heldout(self) -> int:
        return self.shape[3] if self.shape else int(self.arrays["eval_spikes_heldout"].shape[2])

    @property
    def trial_bins(self) -> int:
        return self.shape[0] if self.shape else int(self.arrays["eval_spikes_heldout"].shape[1])

    @property
    def forward_bins(self) -> int:
        return self.shape[1] if self.shape else int(self.arrays["eval_spikes_heldin_forward"].shape[1])

    def unavailable(self) -> dict[str, str]:
        """NLB's metrics these targets cannot score, with the reason."""
        a = self.arrays
        missing = {}
        if "eval_spikes_heldout" not in a:
            missing["co-bps"] = "no held-out neurons' spikes of the eval trials"
        if self.dataset != "dmfc_rsg" and not {"train_behavior", "eval_behavior"} <= set(a):
            missing["vel R2"] = "no behaviour of the train and eval trials"
        if self.dataset in NLB_PSTH_DATASETS and "psth" not in a:
            missing["psth R2"] = "no PSTHs"
        if not {"eval_spikes_heldin_forward", "eval_spikes_heldout_forward"} <= set(a):
            missing["fp-bps"] = "no forward-prediction bins of the eval trials"
        return missing


ID_KEYS = ("train_trial_ids", "eval_trial_ids")
NLB_TARGETS = (
    "eval_spikes_heldout",
    "eval_spikes_heldin_forward",
    "eval_spikes_heldout_forward",
    "train_behavior",
    "eval_behavior",
)


def targets_path(out: str | Path, given: str | Path | None = None) -> Path:
    """Where data preparation writes the targets of training file `out`: `given`, else OUT's name + _targets.h5."""
    out = Path(out)
    return Path(given) if given else out.with_name(f"{out.stem}_targets.h5")


def write_targets(path: str | Path, targets: Targets) -> Path:
    arrays = {f"{targets.name}/{key}": value for key, value in targets.arrays.items()}
    arrays[f"{targets.name}/train_trial_ids"] = targets.train_ids
    arrays[f"{targets.name}/eval_trial_ids"] = targets.eval_ids
    attrs = {KIND_ATTR: "nlb_targets", "nlb_dataset": targets.dataset, "bin_ms": targets.bin_ms, "group": targets.name}
    if targets.shape is not None:
        attrs["shape"] = list(targets.shape)
    return write_lfads_h5(path, arrays, attrs=attrs, compression=True)


def read_targets(path: str | Path) -> Targets:
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            name = h5.attrs.get("group")
            if name is None or name not in h5:
                raise DataError(
                    f"{path}: not an NLB targets file written by `autolfads data nlb` (no 'group' attribute naming its "
                    "data set)"
                )
            group = h5[name]
            shape = tuple(int(n) for n in h5.attrs["shape"]) if "shape" in h5.attrs else None
            # without a shape, the targets are NLB's full set; with one, what the data lack is left out
            required = ID_KEYS if shape else (*NLB_TARGETS, *ID_KEYS)
            missing = [key for key in required if key not in group]
            if missing:
                raise DataError(f"{path}: '{name}/{missing[0]}' is missing; the group has: {', '.join(sorted(group))}")
            arrays = {key: group[key][()] for key in group if key not in ID_KEYS}
            return Targets(
                str(name),
                str(h5.attrs["nlb_dataset"]),
                int(h5.attrs["bin_ms"]),
                arrays,
                group["train_trial_ids"][()],
                group["eval_trial_ids"][()],
                shape,
            )
    except FileNotFoundError:
        raise DataError(f"targets file {path} does not exist") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read as HDF5: {err}") from None
