"""NLB's data sets and what nlb_tools needs from their files, checked up front so a wrong file gets a clear
message in our words rather than an assert deep inside nlb_tools. Shared by `data nlb` from NWB files
(nlb.py) and from nlb_tools' tensor files (nlb_tensors.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from autolfads.data.nlb_synthetic import SYNTHETIC_DESCRIPTION
from autolfads.errors import ConfigError, DataError, MissingDependency

NLB_INSTALL = "pip install pynwb scikit-learn scipy 'pandas<3' && pip install --no-deps nlb-tools==0.0.4"


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
            f"nlb_tools 0.0.4 fails with pandas {pandas.__version__} (read-only arrays in NWBDataset.resample); "
            "install pandas 2: pip install 'pandas<3'"
        )
    return make_tensors, NWBDataset


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
                f"--bin-ms {bin_ms}: {bin_ms} ms does not divide {dataset}'s {span} ms {what}; NLB scores 5 and 20 ms "
                "bins"
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


def check_nwb(files: list[Path], dataset: str) -> list[str]:
    """What nlb_tools needs from the NWB files, checked up front so a wrong file gets a clear message:
    units with spike_times, obs_intervals and heldout; trials with split and the data set's columns; its
    behaviour; NLB's neuron counts (except in our synthetic files). Returns the files' NWB identifiers."""
    from pynwb import NWBHDF5IO

    spec = DATASETS[dataset]
    columns: set[str] = set()
    series: set[str] = set()
    counts: dict[Path, tuple[int, int]] = {}  # held-in and total units of the files with training trials
    identifiers = []
    for file in files:
        try:
            with NWBHDF5IO(str(file), "r") as io:
                nwb = io.read()
                identifiers.append(str(nwb.identifier))
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
                f"{file}: {found[0]} held-in of {found[1]} units, but {dataset} has {spec.neurons[0]} of "
                f"{spec.neurons[1]}{hint}; is --dataset right?"
            )
    return identifiers


def _check_units(file: Path, nwb) -> None:
    if nwb.units is None:
        raise DataError(f"{file}: the NWB file has no units table")
    for column in ("spike_times", "obs_intervals", "heldout"):
        if column not in nwb.units.colnames:
            raise DataError(
                f"{file}: the units table has no {column!r} column, which NLB data sets have (it has: "
                f"{', '.join(nwb.units.colnames)})"
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
