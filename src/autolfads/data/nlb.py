"""NLB data sets: an NWB session in, an LFADS training file and NLB's evaluation targets out, via nlb_tools.

    autolfads data nlb --dataset mc_maze --nwb data/000128/sub-Jenkins --bin-ms 5 --out data/mc_maze.h5
    autolfads data nlb --dataset mc_maze --tensors train_input.h5 eval_input.h5 --eval-targets eval_target.h5 --out data/mc_maze.h5

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

import numpy as np

from autolfads.data.hdf5 import write_lfads_h5
from autolfads.data.nlb_synthetic import SYNTHETIC_DESCRIPTION, true_counts
from autolfads.errors import ConfigError, DataError, MissingDependency

NLB_INSTALL = "pip install pynwb scikit-learn scipy 'pandas<3' && pip install --no-deps nlb-tools==0.0.4"
SPLITS = {"train": "train", "valid": "val", "test": "test"}  # LFADS split -> NLB split
TRUTH_FIELDS = {"spk_field": "truth", "hospk_field": "heldout_truth"}  # where _add_truth puts the true rates


@dataclass(frozen=True)
class NLBDataset:
    trial_columns: tuple[str, ...]  # trials-table columns nlb_tools reads, besides start/stop times and split
    behavior: str | None  # behaviour TimeSeries (None: dmfc_rsg's behaviour is in the trials table)
    neurons: tuple[int, int]  # held-in and total units of NLB's release


_MAZE = ("move_onset_time", "trial_type", "trial_version")
DATASETS = {
    "mc_maze": NLBDataset(_MAZE, "hand_vel", (137, 182)),
    "mc_rtt": NLBDataset((), "finger_vel", (98, 130)),
    "area2_bump": NLBDataset(("move_onset_time", "cond_dir", "ctr_hold_bump"), "hand_vel", (49, 65)),
    "dmfc_rsg": NLBDataset(
        ("set_time", "go_time", "is_eye", "theta", "is_short", "ts", "tp", "is_outlier"), None, (40, 54)
    ),
    "mc_maze_large": NLBDataset(_MAZE, "hand_vel", (122, 162)),
    "mc_maze_medium": NLBDataset(_MAZE, "hand_vel", (114, 152)),
    "mc_maze_small": NLBDataset(_MAZE, "hand_vel", (107, 142)),
}


@dataclass(frozen=True)
class NLBFiles:
    data: Path
    targets: Path
    summary: str


def require_nlb_tools() -> tuple[ModuleType, type]:
    """nlb_tools' tensor module and NWBDataset, or a MissingDependency that says how to install them."""
    try:
        import pandas
        from nlb_tools import make_tensors
        from nlb_tools.nwb_interface import NWBDataset
    except ImportError as err:
        raise MissingDependency(
            f"NLB data need nlb_tools and its dependencies ({err}); install them with: {NLB_INSTALL} "
            "(nlb-tools 0.0.4 pins pandas<=1.3.4, which does not install on Python 3.11: hence --no-deps)"
        ) from None
    if int(pandas.__version__.split(".")[0]) >= 3:
        raise MissingDependency(
            f"nlb_tools 0.0.4 fails with pandas {pandas.__version__} (read-only arrays in NWBDataset.resample); install pandas 2: pip install 'pandas<3'"
        )
    return make_tensors, NWBDataset


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
    files = nwb_files(nwb)
    check_nwb(files, dataset)
    out = Path(out)
    targets_out = Path(targets_out) if targets_out else out.with_name(f"{out.stem}_targets.h5")

    def nlb(step: str, call: Callable, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except Exception as err:  # nlb_tools reports problems with asserts, KeyErrors, ...: name the step instead
            raise DataError(f"{nwb}: nlb_tools failed to {step} for {dataset}: {type(err).__name__}: {err}") from err

    ds = nlb("load the NWB data", NWBDataset, str(nwb))
    nlb(f"resample to {bin_ms} ms", ds.resample, bin_ms)
    if truth is not None:
        _add_truth(ds, truth, bin_ms)
    info = ds.trial_info
    align = params["make_params"].get("align_field", "start_time")
    for name in ("train", "valid"):
        if not (info.split == SPLITS[name]).any():
            raise DataError(f"{nwb}: no trial has split {SPLITS[name]!r}; NLB data sets have 'train' and 'val' trials")
    splits = [name for name in SPLITS if (info.split == SPLITS[name]).any()]

    arrays: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for name in splits:
        mask = info.split == SPLITS[name]
        if name == "test":  # held-in neurons only, as NLB gives test trials
            spikes = nlb(
                "make the test tensors", make_tensors.make_eval_input_tensors, ds, dataset, "test", save_file=False
            )
            arrays["test_encod_data"] = _counts(spikes["eval_spikes_heldin"], "test_encod_data", notes)
        else:
            spikes = nlb(
                f"make the {SPLITS[name]} tensors",
                make_tensors.make_train_input_tensors,
                ds,
                dataset,
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
                f"{nwb}: nlb_tools made {len(arrays[f'{name}_encod_data'])} {name} trials but {len(arrays[f'{name}_inds'])} have a {align}"
            )
        if truth is not None:  # windowed exactly as the spikes
            rates = nlb(
                f"window the true rates of the {SPLITS[name]} trials",
                make_tensors.make_train_input_tensors,
                ds,
                dataset,
                mask.to_numpy(),
                update_params=TRUTH_FIELDS,
                save_file=False,
                include_forward_pred=True,
            )
            arrays[f"{name}_truth"] = _recon(rates).astype(np.float32)

    has_psth = "psth_params" in params
    ((group, target_arrays),) = nlb(
        "make the evaluation targets",
        make_tensors.make_eval_target_tensors,
        ds,
        dataset,
        "train",
        "val",
        save_file=False,
        include_psth=has_psth,
    ).items()
    if has_psth:
        arrays["psth"] = target_arrays["psth"].astype(np.float32)
        arrays["train_condition"] = _condition_labels(target_arrays["train_cond_idx"], len(arrays["train_inds"]))
        arrays["valid_condition"] = _condition_labels(target_arrays["eval_cond_idx"], len(arrays["valid_inds"]))

    (_, trial_bins, heldin), (_, bins, neurons) = arrays["train_encod_data"].shape, arrays["train_recon_data"].shape
    heldout, forward_bins = neurons - heldin, bins - trial_bins
    lo, hi = params["make_params"].get("align_range", (None, None))
    attrs = {
        "nlb_dataset": dataset,
        "bin_ms": bin_ms,
        "nwb": str(nwb),
        "targets": targets_out.name,
        "heldin": heldin,
        "heldout": heldout,
        "trial_bins": trial_bins,
        "forward_bins": forward_bins,
        "window": f"{lo}..{hi} ms around {align}",
    }
    write_lfads_h5(out, arrays, attrs=attrs, compression=True)

    from autolfads.data.nlb_targets import Targets, write_targets

    target_arrays = {key: _target_array(value) for key, value in target_arrays.items()}
    write_targets(
        targets_out, Targets(group, dataset, bin_ms, target_arrays, arrays["train_inds"], arrays["valid_inds"])
    )
    counts = " / ".join(f"{name} {len(arrays[f'{name}_inds'])}" for name in splits)
    summary = (
        f"{out}: {dataset} at {bin_ms} ms, {counts} trials, {trial_bins}+{forward_bins} bins, {heldin}+{heldout} neurons"
        + "".join(f"; {note}" for note in notes)
        + f"\n{targets_out}: NLB evaluation targets ({group}) of the {len(arrays['valid_inds'])} 'val' trials"
    )
    return NLBFiles(out, targets_out, summary)


def check_bin(dataset: str, bin_ms: int, params: dict) -> None:
    """NLB's windows must be whole numbers of bins."""
    if bin_ms < 1:
        raise ConfigError(f"--bin-ms must be a positive number of milliseconds, got {bin_ms}")
    make = params["make_params"]
    windows = [(params["fp_len"], "forward-prediction window")]
    if "align_range" in make:
        lo, hi = make["align_range"]
        windows.insert(0, (hi - lo, f"trial window ({lo}..{hi} ms around {make['align_field']})"))
    for span, what in windows:
        if span % bin_ms:
            raise ConfigError(
                f"--bin-ms {bin_ms}: {bin_ms} ms does not divide {dataset}'s {span} ms {what}; NLB scores 5 and 20 ms bins"
            )


def nwb_files(path: str | Path) -> list[Path]:
    """The NWB file, or the *.nwb files of a folder (how NWBDataset reads them)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.nwb"))
        if not files:
            raise DataError(f"{path}: the folder holds no *.nwb file")
        return files
    if not path.is_file():
        raise DataError(f"NWB file {path} does not exist")
    return [path]


def check_nwb(files: list[Path], dataset: str) -> None:
    """What nlb_tools needs from the NWB files, checked up front so a wrong file gets a clear message:
    units with spike_times, obs_intervals and heldout; trials with split and the data set's columns; its
    behaviour; NLB's neuron counts (except in our synthetic files)."""
    from pynwb import NWBHDF5IO

    spec = DATASETS[dataset]
    columns: set[str] = set()
    series: set[str] = set()
    counts: dict[Path, tuple[int, int]] = {}  # held-in and total units of the files with training trials
    for file in files:
        try:
            with NWBHDF5IO(str(file), "r") as io:
                nwb = io.read()
                _check_units(file, nwb)
                if nwb.trials is None:
                    raise DataError(f"{file}: the NWB file has no trials table")
                columns |= set(nwb.trials.colnames)
                series |= _timeseries_names(nwb)
                if (
                    nwb.session_description != SYNTHETIC_DESCRIPTION
                    and "split" in nwb.trials.colnames
                    and "train" in set(nwb.trials["split"][:])
                ):
                    heldout = int(np.sum(nwb.units["heldout"][:]))
                    counts[file] = (len(nwb.units) - heldout, len(nwb.units))
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"{file}: cannot read as an NWB file: {err}") from None
    where = files[0] if len(files) == 1 else files[0].parent
    missing = [column for column in ("split", *spec.trial_columns) if column not in columns]
    if missing:
        raise DataError(
            f"{where}: the trials table has no column {missing[0]!r}, which {dataset} needs"
            f"{_other_datasets(columns, series, dataset)}; it has: {', '.join(sorted(columns))}"
        )
    if spec.behavior is not None and spec.behavior not in series:
        raise DataError(
            f"{where}: no behaviour TimeSeries {spec.behavior!r}, which {dataset} needs"
            f"{_other_datasets(columns, series, dataset)}; time series found: {', '.join(sorted(series)) or 'none'}"
        )
    for file, found in counts.items():
        if found != spec.neurons:
            same = [name for name, other in DATASETS.items() if other.neurons == found]
            hint = f": these are {same[0]}'s" if same else ""
            raise DataError(
                f"{file}: {found[0]} held-in of {found[1]} units, but {dataset} has {spec.neurons[0]} of {spec.neurons[1]}{hint}; is --dataset right?"
            )


def _check_units(file: Path, nwb) -> None:
    if nwb.units is None:
        raise DataError(f"{file}: the NWB file has no units table")
    for column in ("spike_times", "obs_intervals", "heldout"):
        if column not in nwb.units.colnames:
            raise DataError(
                f"{file}: the units table has no {column!r} column, which NLB data sets have (it has: {', '.join(nwb.units.colnames)})"
            )


def _other_datasets(columns: set[str], series: set[str], dataset: str) -> str:
    fits = [
        name
        for name, spec in DATASETS.items()
        if name != dataset and set(spec.trial_columns) <= columns and (spec.behavior is None or spec.behavior in series)
    ]
    return f" (the file fits {' / '.join(fits)}: is --dataset right?)" if fits else ""


def _timeseries_names(nwb) -> set[str]:
    """Names nlb_tools gives the file's time series: their own, or container_series inside containers."""
    from pynwb import ProcessingModule, TimeSeries
    from pynwb.core import MultiContainerInterface

    names: set[str] = set()
    for child in nwb.children:
        if isinstance(child, TimeSeries):
            names.add(child.name)
        elif isinstance(child, ProcessingModule):
            names |= _timeseries_names(child)
        elif isinstance(child, MultiContainerInterface):
            names |= {f"{child.name}_{field.name}" for field in child.children if isinstance(field, TimeSeries)}
    return names


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
            f"{path}: true rates of {heldout.size} units ({int(heldout.sum())} held out) do not match the NWB file's {len(heldin_columns) + len(heldout_columns)} ({len(heldout_columns)})"
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
