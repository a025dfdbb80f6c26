"""NLB tensor files (what nlb_tools' make_train_input_tensors / make_eval_input_tensors / save_to_h5 write)
-> the LFADS training file and the targets file of `autolfads data nlb`.

    autolfads data nlb --dataset mc_maze_small --tensors train_input.h5 eval_input.h5 \\
        --eval-targets eval_target.h5 --bin-ms 5 --out data/mc_maze_small.h5

What is read, and how trials become splits: docs/architecture.md ("NLB tensor files").
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from autolfads.data.hdf5 import MISSING_BINS_ATTR, write_lfads_h5
from autolfads.data.nlb import NLBFiles, _target_array
from autolfads.data.nlb_datasets import DATASETS, require_nlb_tools
from autolfads.data.nlb_targets import Targets, targets_path, write_targets
from autolfads.data.session import stored_counts
from autolfads.errors import ConfigError, DataError
from autolfads.files import check_distinct

TENSOR_KEYS = tuple(
    f"{prefix}_{key}"
    for prefix in ("train", "eval")
    for key in ("spikes_heldin", "spikes_heldout", "spikes_heldin_forward", "spikes_heldout_forward", "behavior")
)


def prepare_tensors(
    dataset: str,
    tensors: list[str | Path],
    bin_ms: int,
    out: str | Path,
    targets_out: str | Path | None = None,
    eval_targets: str | Path | None = None,
    valid_fraction: float = 0.2,
    seed: int = 0,
) -> NLBFiles:
    if dataset not in DATASETS:
        raise ConfigError(f"unknown NLB data set {dataset!r}; expected one of {', '.join(DATASETS)}")
    make_tensors, _ = require_nlb_tools()
    params = make_tensors.PARAMS[dataset]
    out = Path(out)
    targets_out = targets_path(out, targets_out)
    check_distinct({"--out": out, "--targets": targets_out}, {"--tensors": tensors, "--eval-targets": eval_targets})
    name = dataset if bin_ms == 5 else f"{dataset}_{bin_ms}"
    where = ", ".join(map(str, tensors))
    t = _read_tensors([Path(p) for p in tensors])
    target_arrays = _read_eval_targets(Path(eval_targets), dataset, name) if eval_targets else {}
    trial_bins, forward_bins, heldin, heldout = _tensor_shape(t, where)
    _check_bin(dataset, params, bin_ms, trial_bins, forward_bins, where)
    _check_shapes(t, target_arrays, trial_bins, forward_bins, heldin, heldout, where)
    n_train = len(t["train_spikes_heldin"])
    eval_known = {
        **{k: v for k, v in t.items() if k.startswith("eval_") and k != "eval_spikes_heldin"},
        **target_arrays,
    }
    shape = (trial_bins, forward_bins, heldin, heldout)
    n_eval = len(t["eval_spikes_heldin"])
    train_ids, eval_ids = np.arange(n_train), n_train + np.arange(n_eval)
    notes: list[str] = []
    arrays = _training_arrays(t, eval_known, shape, (train_ids, eval_ids), valid_fraction, seed, notes)

    targets = _targets(t, eval_known, name, dataset, bin_ms, train_ids, eval_ids, shape)
    attrs = {
        "nlb_dataset": dataset,
        "bin_ms": bin_ms,
        "tensors": where,
        "heldin": heldin,
        "heldout": heldout,
        "trial_bins": trial_bins,
        "forward_bins": forward_bins,
        MISSING_BINS_ATTR: True,  # what the tensors lack is NaN: training masks it
    }
    if targets is not None:
        attrs["targets"] = targets_out.name
    write_lfads_h5(out, arrays, attrs=attrs, compression=True)
    notes.append(_write_targets(targets_out, targets, n_eval))
    counts = " / ".join(
        f"{split} {len(arrays[f'{split}_inds'])}" for split in ("train", "valid", "test") if f"{split}_inds" in arrays
    )
    summary = (
        f"{out}: {name} from NLB tensors, {counts} trials, {trial_bins}+{forward_bins} bins, {heldin}+{heldout} neurons"
        + "".join(f"\n  {note}" for note in notes)
    )
    return NLBFiles(out, targets_out if targets is not None else None, summary)


def _write_targets(path: Path, targets: Targets | None, n_eval: int) -> str:
    """Write the targets file, if there is anything to score; a note on what was (or was not) written."""
    if targets is None:
        return (
            "nothing to score locally (no held-out spikes, forward bins or behaviour of the eval trials): "
            "no targets file"
        )
    write_targets(path, targets)
    unavailable = targets.unavailable()
    return f"{path}: targets of the {n_eval} eval trials" + (
        f" (not available: {', '.join(unavailable)})" if unavailable else ""
    )


def _tensor_shape(t: dict, where: str) -> tuple[int, int, int, int]:
    """Trial bins, forward bins, held-in and held-out neurons of the train tensors."""
    for key in ("train_spikes_heldin", "train_spikes_heldout", "eval_spikes_heldin"):
        if key not in t:
            raise DataError(
                f"{where}: no {key!r}; NLB tensor files have train_spikes_heldin/heldout (make_train_input_tensors) "
                f"and eval_spikes_heldin (make_eval_input_tensors); found: {', '.join(sorted(t)) or 'nothing'}"
            )
    _, trial_bins, heldin = t["train_spikes_heldin"].shape
    forward_bins = t["train_spikes_heldin_forward"].shape[1] if "train_spikes_heldin_forward" in t else 0
    return trial_bins, forward_bins, heldin, t["train_spikes_heldout"].shape[2]


def _training_arrays(
    t: dict, eval_known: dict, shape: tuple, ids: tuple, valid_fraction: float, seed: int, notes: list[str]
) -> dict[str, np.ndarray]:
    """The training file's splits. Eval trials with held-out spikes validate; without, they are the test
    split and `valid_fraction` of the train trials validate. What the tensors lack is NaN (missing)."""
    trial_bins, forward_bins, heldin, _ = shape
    (train_ids, eval_ids), n_train, n_eval = ids, len(ids[0]), len(ids[1])
    train_recon = _recon("train", t, n_train, shape)
    eval_recon = _recon("eval", {**eval_known, "eval_spikes_heldin": t["eval_spikes_heldin"]}, n_eval, shape)
    arrays: dict[str, np.ndarray] = {}
    if "eval_spikes_heldout" in eval_known:  # the eval trials validate
        splits = {"train": (train_recon, train_ids), "valid": (eval_recon, eval_ids)}
        if forward_bins and "eval_spikes_heldin_forward" not in eval_known:
            notes.append("the eval trials' forward bins are not in the tensors: NaN (missing)")
    else:  # held-out spikes of the eval trials unknown: they are the test split
        order = np.random.default_rng(seed).permutation(n_train)
        n_valid = max(int(round(valid_fraction * n_train)), 1)
        if not 0 < valid_fraction < 1 or n_valid >= n_train:
            raise ConfigError(
                f"--valid-fraction {valid_fraction} of {n_train} train trials leaves no train or no valid trials"
            )
        valid, train = np.sort(order[:n_valid]), np.sort(order[n_valid:])
        splits = {"train": (train_recon[train], train_ids[train]), "valid": (train_recon[valid], train_ids[valid])}
        arrays["test_encod_data"] = stored_counts(t["eval_spikes_heldin"])
        arrays["test_inds"] = eval_ids
        notes.append(
            f"eval trials' held-out spikes not given: they are the test split; {n_valid} train trials validate"
        )
    for split, (values, split_ids) in splits.items():
        arrays[f"{split}_encod_data"] = stored_counts(values[:, :trial_bins, :heldin])
        arrays[f"{split}_recon_data"] = stored_counts(values)
        arrays[f"{split}_inds"] = split_ids
    missing = sum(int(np.isnan(a).sum()) for key, a in arrays.items() if key.endswith("_data"))
    if missing:
        notes.append(f"{missing} missing bins (NaN, marked in the file): training masks them (SBTT)")
    return arrays


def _recon(prefix: str, source: dict, n: int, shape: tuple) -> np.ndarray:
    """held-in | held-out x trial | forward bins; what `source` lacks is NaN (missing)."""
    trial_bins, forward_bins, heldin, heldout = shape
    full = np.full((n, trial_bins + forward_bins, heldin + heldout), np.nan, dtype=np.float32)
    trial, forward = slice(0, trial_bins), slice(trial_bins, None)
    parts = {
        "heldin": (trial, slice(0, heldin)),
        "heldout": (trial, slice(heldin, None)),
        "heldin_forward": (forward, slice(0, heldin)),
        "heldout_forward": (forward, slice(heldin, None)),
    }
    for part, (bins, units) in parts.items():
        key = f"{prefix}_spikes_{part}"
        if key in source and (bins.stop or trial_bins + forward_bins) > bins.start:
            full[:, bins, units] = source[key]
    return full


def _read_tensors(paths: list[Path]) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    for path in paths:
        try:
            with h5py.File(path, "r") as h5:
                for key in TENSOR_KEYS:
                    if key in h5:
                        if key in tensors:
                            raise DataError(f"{path}: {key!r} is also in an earlier tensor file; give each once")
                        tensors[key] = np.asarray(h5[key][()], dtype=np.float64)
        except FileNotFoundError:
            raise DataError(f"tensor file {path} does not exist") from None
        except OSError as err:
            raise DataError(f"{path}: cannot read as HDF5: {err}") from None
    return tensors


def _read_eval_targets(path: Path, dataset: str, name: str) -> dict[str, np.ndarray]:
    try:
        with h5py.File(path, "r") as h5:
            groups = [group for group in h5 if group == dataset or group.startswith(f"{dataset}_")]
            if not groups:
                raise DataError(
                    f"{path}: no group {name!r}; make_eval_target_tensors names it after the data set (and bin width); "
                    f"found: {', '.join(h5) or 'nothing'}"
                )
            if name not in h5:
                raise DataError(
                    f"{path}: the targets are {groups[0]!r} but --bin-ms gives {name!r}; is --bin-ms right?"
                )
            return {key: _target_array(np.asarray(h5[name][key][()])) for key in h5[name]}
    except FileNotFoundError:
        raise DataError(f"eval targets file {path} does not exist") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read as HDF5: {err}") from None


def _check_bin(dataset: str, params: dict, bin_ms: int, trial_bins: int, forward_bins: int, where: str) -> None:
    """The bin width the tensors imply (NLB's windows are fixed) must be --bin-ms."""
    if bin_ms < 1:
        raise ConfigError(f"--bin-ms must be a positive number of milliseconds, got {bin_ms}")
    spans = []
    if "align_range" in params["make_params"]:
        lo, hi = params["make_params"]["align_range"]
        spans.append((hi - lo, trial_bins, "train_spikes_heldin", f"{dataset}'s {hi - lo} ms trial window"))
    if forward_bins:
        spans.append(
            (
                params["fp_len"],
                forward_bins,
                "train_spikes_heldin_forward",
                f"{dataset}'s {params['fp_len']} ms forward window",
            )
        )
    for span, bins, key, what in spans:
        if span != bins * bin_ms:
            implied = f"{span / bins:g} ms bins" if bins else "no bins"
            raise DataError(f"{where}: {key!r} has {bins} bins: {implied} for {what}, but --bin-ms is {bin_ms}")


def _check_shapes(
    t: dict, target_arrays: dict, trial_bins: int, forward_bins: int, heldin: int, heldout: int, where: str
) -> None:
    expected = {
        "heldin": (trial_bins, heldin),
        "heldout": (trial_bins, heldout),
        "heldin_forward": (forward_bins, heldin),
        "heldout_forward": (forward_bins, heldout),
    }
    for prefix, source in (("train", t), ("eval", {**t, **target_arrays})):
        for part, shape in expected.items():
            key = f"{prefix}_spikes_{part}"
            if key in source and source[key].shape[1:] != shape:
                raise DataError(
                    f"{where}: {key!r} is {source[key].shape[1]} bins x {source[key].shape[2]} neurons, expected "
                    f"{shape[0]} x {shape[1]} (as train_spikes_heldin/heldout{'_forward' if 'forward' in part else ''})"
                )
    if "eval_spikes_heldout" in target_arrays and len(target_arrays["eval_spikes_heldout"]) != len(
        t["eval_spikes_heldin"]
    ):
        raise DataError(
            f"{where}: {len(t['eval_spikes_heldin'])} eval trials but the eval targets have "
            f"{len(target_arrays['eval_spikes_heldout'])}"
        )


def _targets(t: dict, eval_known: dict, name: str, dataset: str, bin_ms: int, train_ids, eval_ids, shape):
    """NLB's targets of the eval trials, with what the tensors lack left out; None if nothing to score."""
    arrays = dict(eval_known)
    if "train_behavior" in t and "train_behavior" not in arrays:
        arrays["train_behavior"] = t["train_behavior"]
    if not any(key in arrays for key in ("eval_spikes_heldout", "eval_spikes_heldin_forward", "eval_behavior")):
        return None
    arrays = {key: _target_array(np.asarray(value)) for key, value in arrays.items()}
    return Targets(name, dataset, bin_ms, arrays, train_ids, eval_ids, shape)
