"""Continuous recordings: chop a long (time x neurons) recording into overlapping LFADS trials, merge back.

    autolfads data continuous --out rec.h5                       # synthetic recording with true rates
    autolfads data chop --input rec.h5 --key data --window 50 --overlap 10 --out chops.h5
    autolfads train --data chops.h5 --checkpoint runs/rec ...
    autolfads data merge --output runs/rec/lfads_output.h5 --chops chops.h5 --out merged.h5

Chopping: segments start every window - overlap bins; when the recording does not end on a segment boundary
one more segment, aligned to the recording's end, covers the remainder (it overlaps its neighbour by more).
The chop file is an ordinary single-layout LFADS file (train_data, valid_data, {split}_inds = segment
numbers, {split}_truth when the recording has truth) plus chop_starts (first bin of each segment) and the
attributes chop_window, chop_overlap, chop_n_bins that `merge` reads back.

Merging: every (segments x window x dims) field of the output (rates, factors, ...) is put back on the
recording's time axis. Where two segments overlap, their values are blended with weights that ramp across
the overlap: linear (the later segment's weight rises (k + 1/2) / overlap, the earlier one's falls by the same)
or power (the ramps raised to --power, then normalised so the weights sum to 1). Bins covered by one segment
take its values exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from autolfads.data.hdf5 import KIND_ATTR, write_lfads_h5
from autolfads.errors import ConfigError, DataError
from autolfads.files import check_distinct

RAMPS = ("linear", "power")


def chop_starts(n_bins: int, window: int, overlap: int) -> np.ndarray:
    """First bin of every segment; checks the window and overlap against the recording."""
    if window < 1:
        raise ConfigError(f"the chop window must be >= 1 bin, got {window}")
    if overlap < 0:
        raise ConfigError(f"the chop overlap must be >= 0 bins, got {overlap}")
    if 2 * overlap > window:
        raise ConfigError(
            f"the chop overlap ({overlap} bins) must be at most half the window ({window} bins): "
            "otherwise three segments would share bins; use --overlap <= " + str(window // 2)
        )
    if window > n_bins:
        raise DataError(
            f"the chop window ({window} bins) is longer than the recording ({n_bins} bins); use a smaller --window"
        )
    starts = list(range(0, n_bins - window + 1, window - overlap))
    if starts[-1] + window < n_bins:
        starts.append(n_bins - window)
    return np.asarray(starts, dtype=np.int64)


def chop(recording: np.ndarray, window: int, overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """recording (time, neurons) -> segments (S, window, neurons), starts (S,)."""
    recording = np.asarray(recording)
    if recording.ndim != 2:
        raise DataError(f"a continuous recording must be 2-D (time x neurons), got shape {recording.shape}")
    starts = chop_starts(recording.shape[0], window, overlap)
    return np.stack([recording[s : s + window] for s in starts]), starts


def blend_weights(starts: np.ndarray, window: int, ramp: str = "linear", power: float = 2.0) -> np.ndarray:
    """(S, window) weights; at every bin the weights of the segments covering it sum to 1."""
    if ramp not in RAMPS:
        raise ConfigError(f"unknown blending ramp {ramp!r}; expected one of {', '.join(RAMPS)}")
    if power <= 0:
        raise ConfigError(f"the ramp power must be > 0, got {power}")
    order = np.argsort(starts)
    weights = np.ones((len(starts), window))
    for i, j in zip(order[:-1], order[1:]):  # consecutive segments i (earlier) and j
        shared = int(starts[i] + window - starts[j])
        if shared <= 0:
            continue
        rise = (np.arange(shared) + 0.5) / shared
        fall = 1.0 - rise
        if ramp == "power":
            rise, fall = rise**power, fall**power
            rise, fall = rise / (rise + fall), fall / (rise + fall)
        weights[j, :shared] *= rise
        weights[i, window - shared :] *= fall
    return weights


def merge(
    segments: np.ndarray, starts: np.ndarray, n_bins: int, ramp: str = "linear", power: float = 2.0
) -> np.ndarray:
    """segments (S, window, ...) at `starts` -> (n_bins, ...), overlaps blended (see blend_weights)."""
    segments = np.asarray(segments, dtype=np.float64)
    starts = np.asarray(starts, dtype=np.int64)
    if segments.shape[0] != starts.shape[0]:
        raise DataError(f"{segments.shape[0]} segments but {starts.shape[0]} segment starts")
    window = segments.shape[1]
    if starts.size and (starts.min() < 0 or starts.max() + window > n_bins):
        raise DataError(
            f"segments of {window} bins starting at {starts.min()}..{starts.max()} do not fit {n_bins} bins"
        )
    weights = blend_weights(starts, window, ramp, power).reshape(*segments.shape[:2], *([1] * (segments.ndim - 2)))
    merged = np.zeros((n_bins, *segments.shape[2:]))
    total = np.zeros((n_bins,) + (1,) * (segments.ndim - 2))
    for segment, weight, start in zip(segments, weights, starts):
        merged[start : start + window] += weight * segment
        total[start : start + window] += weight
    covered = total.reshape(n_bins) > 0
    if not covered.all():
        raise DataError(
            f"{int((~covered).sum())} of {n_bins} bins are covered by no segment (segments missing from the output?)"
        )
    return merged / total


# ---------------------------------------------------------------- files


def _read_recording(path: Path, key: str) -> np.ndarray:
    try:
        with h5py.File(path, "r") as h5:
            if key not in h5:
                raise DataError(f"{path}: no key {key!r}; the file has: {', '.join(sorted(h5.keys())) or 'nothing'}")
            return np.asarray(h5[key][()])
    except OSError as err:
        raise DataError(f"{path}: cannot open as HDF5: {err}") from err


def chop_file(
    input: str | Path,
    key: str,
    window: int,
    overlap: int,
    out: str | Path,
    *,
    truth_key: str | None = None,
    valid_fraction: float = 0.2,
    seed: int = 0,
) -> Path:
    """Chop dataset `key` (time x neurons) of `input` into an LFADS training file `out` (see the module doc).

    Segments go to train / valid at random (`valid_fraction`, `seed`); `truth_key` (default: "truth" when the
    file has it) is chopped alongside into {split}_truth.
    """
    path = Path(input)
    check_distinct({"--out": out}, {"--input": path})
    recording = _read_recording(path, key)
    segments, starts = chop(recording, window, overlap)
    if truth_key is None:
        with h5py.File(path, "r") as h5:
            truth_key = "truth" if "truth" in h5 and key != "truth" else None
    truth = None
    if truth_key is not None:
        truth = _read_recording(path, truth_key)
        if truth.shape != recording.shape:
            raise DataError(f"{path}: {truth_key!r} has shape {truth.shape} but {key!r} has {recording.shape}")
        truth = chop(truth, window, overlap)[0]
    n = len(starts)
    n_valid = int(round(valid_fraction * n))
    if not 0 <= valid_fraction < 1 or not 1 <= n_valid < n:
        raise ConfigError(
            f"valid_fraction={valid_fraction} of {n} segments gives {n_valid} validation segments; need at least 1, "
            "and 1 left for training (a longer recording or a shorter --window)"
        )
    order = np.random.default_rng(seed).permutation(n)
    arrays: dict[str, np.ndarray] = {"chop_starts": starts}
    for name, inds in (("train", np.sort(order[n_valid:])), ("valid", np.sort(order[:n_valid]))):
        arrays[f"{name}_data"] = segments[inds]
        arrays[f"{name}_inds"] = inds.astype(np.int64)
        if truth is not None:
            arrays[f"{name}_truth"] = truth[inds].astype(np.float32)
    attrs = {
        "chop_window": window,
        "chop_overlap": overlap,
        "chop_n_bins": recording.shape[0],
        "chop_source": str(path.resolve()),
        "chop_key": key,
        "chop_params": json.dumps({"valid_fraction": valid_fraction, "seed": seed, "truth_key": truth_key}),
    }
    return write_lfads_h5(out, arrays, attrs, compression=True)


def merge_file(
    output: str | Path, chops: str | Path, out: str | Path, *, ramp: str = "linear", power: float = 2.0
) -> Path:
    """Merge the per-segment fields of an LFADS output file back into continuous (time x dims) arrays.

    Every `{split}_{field}` of shape (trials, window, ...) is merged over all splits into `field`
    (rates, factors, gen_states, ...); `{split}_inds` name the segments (the chop file's numbering).
    """
    chops, output = Path(chops), Path(output)
    check_distinct({"--out": out}, {"--output": output, "--chops": chops})
    try:
        with h5py.File(chops, "r") as h5:
            if "chop_starts" not in h5 or "chop_window" not in h5.attrs:
                raise DataError(f"{chops}: not a chop file of `autolfads data chop` (no chop_starts / chop_window)")
            starts = np.asarray(h5["chop_starts"][()])
            window, n_bins = int(h5.attrs["chop_window"]), int(h5.attrs["chop_n_bins"])
    except OSError as err:
        raise DataError(f"{chops}: cannot open as HDF5: {err}") from err
    try:
        h5 = h5py.File(output, "r")
    except OSError as err:
        raise DataError(f"{output}: cannot open as HDF5: {err}") from err
    with h5:
        splits = sorted({key[: -len("_inds")] for key in h5 if key.endswith("_inds")})
        if not splits:
            raise DataError(f"{output}: no {{split}}_inds: not an LFADS output file")
        inds = {name: np.asarray(h5[f"{name}_inds"][()]) for name in splits}
        all_inds = np.concatenate(list(inds.values()))
        if all_inds.min() < 0 or all_inds.max() >= len(starts):
            raise DataError(
                f"{output}: segment numbers {all_inds.min()}..{all_inds.max()} do not belong to {chops} ({len(starts)} "
                "segments)"
            )
        segment_starts = starts[np.concatenate([inds[name] for name in splits])]
        fields = sorted(
            {
                key[len(name) + 1 :]
                for name in splits
                for key in h5
                if key.startswith(name + "_") and key != f"{name}_inds"
            }
        )
        arrays: dict[str, np.ndarray] = {}
        for field in fields:
            parts = [np.asarray(h5[f"{name}_{field}"][()]) for name in splits if f"{name}_{field}" in h5]
            if len(parts) != len(splits) or any(p.ndim < 2 or p.shape[1] != window for p in parts):
                continue  # not a per-bin field (ic_mean, gen_init, ...)
            arrays[field] = merge(np.concatenate(parts), segment_starts, n_bins, ramp, power).astype(np.float32)
    if "rates" not in arrays:
        raise DataError(f"{output}: no {{split}}_rates with {window} bins: does it belong to {chops}?")
    attrs = {
        KIND_ATTR: "lfads_output",
        "merged_from": str(output.resolve()),
        "chops": str(chops.resolve()),
        "ramp": ramp,
        "power": power,
    }
    return write_lfads_h5(out, arrays, attrs, compression=True)


# ---------------------------------------------------------------- synthetic continuous recording


def make_continuous(
    *,
    n_bins: int = 2000,
    n_neurons: int = 30,
    time_per_bin: float = 0.01,
    substeps: int = 4,
    base_rate: float = 0.15,
    gain: float = 1.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """One long Lorenz-driven spiking recording with its true rates, deterministic under `seed`.

    data: (n_bins, n_neurons) int32 Poisson counts; truth: rates in counts per bin
    (base_rate * exp(gain * loadings @ z-scored Lorenz state)); latents: (n_bins, 3).
    """
    from autolfads.data.synthetic import _lorenz_velocity, _rk4_step

    for name, value in (("n_bins", n_bins), ("n_neurons", n_neurons), ("substeps", substeps)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    rng = np.random.default_rng(seed)
    state = rng.normal(size=3) * np.array([5.0, 5.0, 5.0]) + np.array([0.0, 0.0, 25.0])
    dt = time_per_bin / substeps
    for _ in range(int(5.0 / dt)):  # burn-in onto the attractor
        state = _rk4_step(_lorenz_velocity, state, dt)
    latents = np.empty((n_bins, 3))
    for t in range(n_bins):
        for _ in range(substeps):
            state = _rk4_step(_lorenz_velocity, state, dt)
        latents[t] = state
    z = (latents - latents.mean(0)) / latents.std(0)
    loadings = rng.normal(size=(3, n_neurons)) / np.sqrt(3)
    truth = base_rate * np.exp(gain * z @ loadings)
    return {
        "data": rng.poisson(truth).astype(np.int32),
        "truth": truth.astype(np.float32),
        "latents": z.astype(np.float32),
    }


def write_continuous(out: str | Path, **params) -> Path:
    arrays = make_continuous(**params)
    return write_lfads_h5(
        out,
        arrays,
        {
            KIND_ATTR: "recording",
            "synthetic_kind": "continuous",
            "synthetic_params": json.dumps(params, sort_keys=True),
        },
        compression=True,
    )
