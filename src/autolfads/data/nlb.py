"""NLB data sets: an NWB session in, an LFADS training file and NLB's evaluation targets out, via nlb_tools.

    autolfads data nlb --dataset mc_maze --nwb data/000128/sub-Jenkins --bin-ms 5 --out data/mc_maze.h5
    autolfads data nlb --dataset mc_maze --tensors train_input.h5 eval_input.h5 --eval-targets eval_target.h5 \
        --out data/mc_maze.h5

(--tensors: nlb_tools' tensor files instead of the NWB; see autolfads.data.nlb_tensors.)

The training file is in the encod/recon layout that `autolfads train` and `search` read as is:
    {train,valid,test}_encod_data   held-in neurons x trial bins: what the encoders see
    {train,valid}_recon_data        held-in then held-out neurons x trial then forward-prediction bins
    {split}_inds                    NLB trial ids
    {train,valid}_behavior          behaviour as NLB scores it (e.g. hand velocity, lagged)
    {train,valid}_condition, psth   each trial's condition (-1: none) and NLB's PSTHs, for data sets with them
    {split}_truth                   true expected counts per bin (only with --truth, for synthetic data)
LFADS's splits are NLB's: train = the 'train' trials; valid = the 'val' trials, which NLB's local evaluation
scores (their held-out neurons only ever enter validation metrics); test = the 'test' trials, held-in
neurons only, when the NWB holds them. The targets file holds make_eval_target_tensors' output for the
'val' trials, in nlb_tools' layout (see autolfads.data.nlb_targets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from autolfads.data.hdf5 import write_lfads_h5
from autolfads.data.nlb_datasets import DATASETS, check_bin, check_nwb, nwb_files, require_nlb_tools
from autolfads.data.nlb_synthetic import true_counts
from autolfads.data.nlb_targets import Targets, targets_path, write_targets
from autolfads.errors import ConfigError, DataError
from autolfads.files import check_distinct

SPLITS = {"train": "train", "valid": "val", "test": "test"}  # LFADS split -> NLB split
TRUTH_FIELDS = {"spk_field": "truth", "hospk_field": "heldout_truth"}  # where _add_truth puts the true rates


@dataclass(frozen=True)
class NLBFiles:
    data: Path
    targets: Path
    summary: str


def prepare_nlb(
    dataset: str,
    nwb: str | Path,
    bin_ms: int,
    out: str | Path,
    targets_out: str | Path | None = None,
    truth: str | Path | None = None,
) -> NLBFiles:
    """Build the training file `out` and the targets file (default `<out stem>_targets.h5`) from an NWB file
    or a folder of them (NLB's train and test files of one data set). truth: a truth side file of
    `autolfads data nlb-synthetic`, stored as {split}_truth."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown NLB data set {dataset!r}; expected one of {', '.join(DATASETS)}")
    make_tensors, NWBDataset = require_nlb_tools()
    params = make_tensors.PARAMS[dataset]
    check_bin(dataset, bin_ms, params)
    out = Path(out)
    targets_out = targets_path(out, targets_out)
    files = nwb_files(nwb)
    check_distinct({"--out": out, "--targets": targets_out}, {"--nwb": files, "--truth": truth})
    identifiers = check_nwb(files, dataset)

    run = _NLBTools(dataset, nwb, make_tensors)
    run.ds = run.call("load the NWB data", NWBDataset, str(nwb))
    run.call(f"resample to {bin_ms} ms", run.ds.resample, bin_ms)
    if truth is not None:
        _add_truth(run.ds, truth, bin_ms)
    align = params["make_params"].get("align_field", "start_time")
    splits = _splits_present(run)

    arrays: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for name in splits:
        arrays.update(_split_arrays(run, name, align, truth is not None, notes))
    group, target_arrays = _eval_targets(run, "psth_params" in params, arrays)

    (_, trial_bins, heldin), (_, bins, neurons) = arrays["train_encod_data"].shape, arrays["train_recon_data"].shape
    lo, hi = params["make_params"].get("align_range", (None, None))
    attrs = {
        "nlb_dataset": dataset,
        "bin_ms": bin_ms,
        "nwb": str(nwb),
        "session_identifier": ", ".join(identifiers),  # provenance (data.identity); `data nlb` files are not exported
        "targets": targets_out.name,
        "heldin": heldin,
        "heldout": neurons - heldin,
        "trial_bins": trial_bins,
        "forward_bins": bins - trial_bins,
        "window": f"{lo}..{hi} ms around {align}",
    }
    write_lfads_h5(out, arrays, attrs=attrs, compression=True)
    target_arrays = {key: _target_array(value) for key, value in target_arrays.items()}
    write_targets(
        targets_out, Targets(group, dataset, bin_ms, target_arrays, arrays["train_inds"], arrays["valid_inds"])
    )
    counts = " / ".join(f"{name} {len(arrays[f'{name}_inds'])}" for name in splits)
    summary = (
        f"{out}: {dataset} at {bin_ms} ms, {counts} trials, {trial_bins}+{bins - trial_bins} bins, "
        f"{heldin}+{neurons - heldin} neurons"
        + "".join(f"; {note}" for note in notes)
        + f"\n{targets_out}: NLB evaluation targets ({group}) of the {len(arrays['valid_inds'])} 'val' trials"
    )
    return NLBFiles(out, targets_out, summary)


def _splits_present(run: _NLBTools) -> list[str]:
    """The LFADS splits the data set's trials fill: train and valid always, test when NLB's test file is in."""
    info = run.ds.trial_info
    for name in ("train", "valid"):
        if not (info.split == SPLITS[name]).any():
            raise DataError(
                f"{run.nwb}: no trial has split {SPLITS[name]!r}; NLB data sets have 'train' and 'val' trials"
            )
    return [name for name in SPLITS if (info.split == SPLITS[name]).any()]


@dataclass
class _NLBTools:
    """nlb_tools at work on one data set: its tensor module and the loaded NWBDataset."""

    dataset: str
    nwb: str | Path
    make_tensors: ModuleType
    ds: Any = None

    def call(self, step: str, function: Callable, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as err:  # nlb_tools reports problems with asserts, KeyErrors, ...: name the step instead
            raise DataError(
                f"{self.nwb}: nlb_tools failed to {step} for {self.dataset}: {type(err).__name__}: {err}"
            ) from err


def _split_arrays(run: _NLBTools, name: str, align: str, truth: bool, notes: list[str]) -> dict[str, np.ndarray]:
    """One split's arrays of the training file: spikes (test: held-in only, as NLB gives test trials),
    behaviour, NLB trial ids and, with a truth side file, the true rates windowed exactly as the spikes."""
    make, info = run.make_tensors, run.ds.trial_info
    mask = info.split == SPLITS[name]
    arrays: dict[str, np.ndarray] = {}
    if name == "test":
        spikes = run.call(
            "make the test tensors", make.make_eval_input_tensors, run.ds, run.dataset, "test", save_file=False
        )
        arrays["test_encod_data"] = _counts(spikes["eval_spikes_heldin"], "test_encod_data", notes)
    else:
        spikes = run.call(
            f"make the {SPLITS[name]} tensors",
            make.make_train_input_tensors,
            run.ds,
            run.dataset,
            SPLITS[name],
            save_file=False,
            include_behavior=True,
            include_forward_pred=True,
        )
        arrays[f"{name}_encod_data"] = _counts(spikes["train_spikes_heldin"], f"{name}_encod_data", notes)
        arrays[f"{name}_recon_data"] = _counts(_recon(spikes), f"{name}_recon_data", notes)
        arrays[f"{name}_behavior"] = spikes["train_behavior"].astype(np.float32)
    arrays[f"{name}_inds"] = info.loc[mask & info[align].notna(), "trial_id"].to_numpy()
    if len(arrays[f"{name}_encod_data"]) != len(arrays[f"{name}_inds"]):
        raise DataError(
            f"{run.nwb}: nlb_tools made {len(arrays[f'{name}_encod_data'])} {name} trials but "
            f"{len(arrays[f'{name}_inds'])} have a {align}"
        )
    if truth:
        rates = run.call(
            f"window the true rates of the {SPLITS[name]} trials",
            make.make_train_input_tensors,
            run.ds,
            run.dataset,
            mask.to_numpy(),
            update_params=TRUTH_FIELDS,
            save_file=False,
            include_forward_pred=True,
        )
        arrays[f"{name}_truth"] = _recon(rates).astype(np.float32)
    return arrays


def _eval_targets(run: _NLBTools, has_psth: bool, arrays: dict[str, np.ndarray]) -> tuple[str, dict]:
    """nlb_tools' evaluation targets of the 'val' trials -> (their group, their arrays); with PSTHs, the PSTHs
    and every trial's condition also go into the training file's `arrays`."""
    ((group, target_arrays),) = run.call(
        "make the evaluation targets",
        run.make_tensors.make_eval_target_tensors,
        run.ds,
        run.dataset,
        "train",
        "val",
        save_file=False,
        include_psth=has_psth,
    ).items()
    if has_psth:
        arrays["psth"] = target_arrays["psth"].astype(np.float32)
        arrays["train_condition"] = _condition_labels(target_arrays["train_cond_idx"], len(arrays["train_inds"]))
        arrays["valid_condition"] = _condition_labels(target_arrays["eval_cond_idx"], len(arrays["valid_inds"]))
    return group, target_arrays


def _add_truth(ds, path: str | Path, bin_ms: int) -> None:
    """Add the true expected counts per bin as signals 'truth' and 'heldout_truth', binned as NWBDataset
    bins spikes (bins from t = 0, the last partial bin summed as is)."""
    import pandas as pd

    if bin_ms % 5:
        raise ConfigError(f"--truth: true rates are kept per 5 ms, so --bin-ms must be a multiple of 5, got {bin_ms}")
    counts, heldout = true_counts(path)
    heldin_columns, heldout_columns = ds.data["spikes"].columns, ds.data["heldout_spikes"].columns
    if (heldout.size, int(heldout.sum())) != (len(heldin_columns) + len(heldout_columns), len(heldout_columns)):
        raise DataError(
            f"{path}: true rates of {heldout.size} units ({int(heldout.sum())} held out) do not match the NWB file's "
            f"{len(heldin_columns) + len(heldout_columns)} ({len(heldout_columns)})"
        )
    per_bin = bin_ms // 5
    rows = len(ds.data.index)
    padded = np.zeros((rows * per_bin, heldout.size))
    padded[: min(len(padded), len(counts))] = counts[: len(padded)]
    binned = padded.reshape(rows, per_bin, -1).sum(axis=1)
    frames = [
        pd.DataFrame(
            binned[:, mask],
            index=ds.data.index,
            columns=pd.MultiIndex.from_product([[field], columns], names=ds.data.columns.names),
        )
        for field, mask, columns in (("truth", ~heldout, heldin_columns), ("heldout_truth", heldout, heldout_columns))
    ]
    ds.data = pd.concat([ds.data, *frames], axis=1)


def _recon(values: dict[str, np.ndarray]) -> np.ndarray:
    """make_train_input_tensors' arrays as held-in then held-out neurons x trial then forward bins."""
    trial = np.concatenate([values["train_spikes_heldin"], values["train_spikes_heldout"]], axis=2)
    forward = np.concatenate([values["train_spikes_heldin_forward"], values["train_spikes_heldout_forward"]], axis=2)
    return np.concatenate([trial, forward], axis=1)


def _counts(values: np.ndarray, key: str, notes: list[str]) -> np.ndarray:
    """Spike counts as int16; NaN (bins outside the recorded intervals) become 0, with a note."""
    missing = np.isnan(values)
    if missing.any():
        notes.append(f"{int(missing.sum())} unrecorded bins of {key} set to 0")
    return np.nan_to_num(values).astype(np.int16)


def _condition_labels(cond_idx: np.ndarray, n_trials: int) -> np.ndarray:
    labels = np.full(n_trials, -1, dtype=np.int32)
    for condition, trials in enumerate(cond_idx):
        labels[np.asarray(trials, dtype=int)] = condition
    return labels


def _target_array(value: np.ndarray) -> np.ndarray:
    """As nlb_tools stores targets: floats as float32, per-condition trial lists as ragged int arrays."""
    if value.dtype == object:  # nlb_tools makes it 2-D when every condition has as many trials
        ragged = np.empty(len(value), dtype=object)
        for i, row in enumerate(value):
            ragged[i] = np.asarray(row, dtype=np.int64)
        return ragged
    return value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value
