"""Which session a training file was made from, so results go back only into that session.

`data nwb` and `data spikes` record the source session's identity as attributes of the training file
(`data nlb` records the NWB identifiers of its files); `sample` carries them into lfads_output.h5, and
`export-nwb` checks the session it writes into against them:
    session_identifier      the NWB file's identifier ('' for plain spike times)
    session_units           how many units the session has
    session_units_sha256    SHA-256 of the unit ids (as text, in the session's order)
    session_spikes_sha256   SHA-256 of every unit's spike times (float64 seconds)
    session_trials          how many trials the session's trials table has
    session_trials_sha256   SHA-256 of the trial ids and their start and stop times (float64 seconds)
The digests are of content, not of the file: a copy of the session, or the session written anew, matches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

PREFIX = "session_"
# What each recorded attribute is, for messages naming what differs.
WHAT = {
    "session_identifier": "NWB identifier",
    "session_units": "number of units",
    "session_units_sha256": "unit ids",
    "session_spikes_sha256": "spike times",
    "session_trials": "number of trials",
    "session_trials_sha256": "trial ids or start/stop times",
}


def fingerprint(
    identifier: str | None,
    unit_ids: np.ndarray,
    spike_times: Sequence[np.ndarray],
    trial_ids: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
) -> dict[str, str | int]:
    """The identity attributes of a session (see the module doc)."""
    spikes = hashlib.sha256()
    for times in spike_times:
        times = np.ascontiguousarray(times, dtype=np.float64)
        spikes.update(np.int64(times.size).tobytes() + times.tobytes())  # the length keeps units apart
    trials = np.stack([np.asarray(trial_ids, dtype=np.float64), start, stop]).astype(np.float64)
    return {
        "session_identifier": identifier or "",
        "session_units": len(unit_ids),
        "session_units_sha256": _sha256("\n".join(_text(u) for u in np.asarray(unit_ids).tolist()).encode()),
        "session_spikes_sha256": spikes.hexdigest(),
        "session_trials": len(trial_ids),
        "session_trials_sha256": _sha256(np.ascontiguousarray(trials).tobytes()),
    }


def identity_of(attrs: Mapping) -> dict[str, str | int]:
    """The identity attributes among a file's attributes (empty for files made before they were recorded)."""
    return {key: _plain(value) for key, value in attrs.items() if key in WHAT}


def read_identity(path: str | Path) -> dict[str, str | int]:
    with h5py.File(path, "r") as h5:
        return identity_of(h5.attrs)


def differences(recorded: Mapping, found: Mapping, there: str, here: str) -> list[str]:
    """What differs between two identities, in words: 'number of units (6 in THERE, 9 in HERE)'; only the
    keys both hold are compared."""
    shown = []
    for key, what in WHAT.items():
        if key in recorded and key in found and recorded[key] != found[key]:
            values = "" if key.endswith("_sha256") else f" ({recorded[key]!r} in {there}, {found[key]!r} in {here})"
            shown.append(f"{what}{values}")
    return shown


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _plain(value: object) -> str | int:
    """An HDF5 attribute as a Python str or int (h5py gives numpy scalars and sometimes bytes)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
