"""Multi-session synthetic spiking data: one Lorenz system recorded in several sessions with different neurons.

    autolfads data multisession --out data/sessions --n-sessions 3 --neurons-per-session 25,30,35

Every session records the same conditions (same condition ids), and a condition's latent trajectory is the
same Lorenz trajectory in every session. Each session has its own neurons (its own count and its own random
projection of the latents to log-rates), its own independent Poisson trials and its own train/valid split.
With few trials per condition in each session, a model fitted to all sessions at once (stitching) sees more
of every condition than a model of one session alone.

Session s is written to DIR/session_{s:02d}.h5 in the single layout of `autolfads data lorenz`: train_data /
valid_data counts, {split}_truth in Hz with conversion_factor, {split}_inds, {split}_latents and
{split}_cond_idx, plus the attributes synthetic_kind, synthetic_params, session_index and n_sessions.

Randomness: np.random.SeedSequence(seed) spawns one stream for the shared latents and one per session, so
session s depends only on the seed, s and its own parameters; adding sessions leaves the others unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autolfads.data.hdf5 import write_lfads_h5
from autolfads.data.synthetic import _check_sizes, _trials, check_rate_range, lorenz_latents, lorenz_rates
from autolfads.errors import ConfigError

SESSION_FILE_GLOB = "session_*.h5"


def session_file_name(session: int) -> str:
    return f"session_{session:02d}.h5"


def make_multisession(
    *,
    n_sessions: int = 3,
    neurons_per_session: str | Sequence[int] = "25,30,35",
    n_conditions: int = 40,
    trials_per_condition: int = 8,
    seq_len: int = 50,
    bin_ms: float = 20.0,
    valid_fraction: float = 0.25,
    seed: int = 0,
    min_rate_hz: float = 1.0,
    max_rate_hz: float = 200.0,
    time_per_bin: float = 0.015,
    substeps: int = 6,
    burn_in: float = 5.0,
) -> list[dict[str, np.ndarray]]:
    """Sessions sharing one Lorenz latent trajectory per condition, each with its own neurons and trials.

    neurons_per_session: comma-separated neuron counts, one per session ("25,30,35"), or one count for
    every session. Each session's arrays are those of `autolfads data lorenz` (see make_lorenz for the rate
    and integration parameters): the latents and the condition ids agree across sessions, the neurons,
    spikes and train/valid split do not. The defaults (40 conditions x 8 trials, 6 train + 2 valid per
    condition and session) make a small stitching problem.
    """
    counts = session_neuron_counts(neurons_per_session, n_sessions)
    _check_sizes(n_conditions, trials_per_condition, min(counts), seq_len, bin_ms, valid_fraction)
    check_rate_range(min_rate_hz, max_rate_hz)
    latent_stream, *session_streams = np.random.SeedSequence(seed).spawn(1 + n_sessions)
    latents = lorenz_latents(
        np.random.default_rng(latent_stream),
        n_conditions,
        seq_len,
        time_per_bin=time_per_bin,
        substeps=substeps,
        burn_in=burn_in,
    )
    sessions = []
    for n_neurons, stream in zip(counts, session_streams):
        rng = np.random.default_rng(stream)
        rates_hz = lorenz_rates(rng, latents, n_neurons, min_rate_hz, max_rate_hz)
        sessions.append(_trials(rates_hz, latents, trials_per_condition, bin_ms, valid_fraction, rng))
    return sessions


def write_multisession(out_dir: str | Path, **params: object) -> list[Path]:
    """Build the sessions of make_multisession(**params) and write one file per session into `out_dir`.

    The folder is created if missing; each file is written atomically. Session files left in the folder by
    an earlier run with more sessions are refused: a loader reading every session_*.h5 would mix them in.
    """
    folder = Path(out_dir)
    sessions = make_multisession(**params)
    names = [session_file_name(s) for s in range(len(sessions))]
    stale = sorted(p.name for p in folder.glob(SESSION_FILE_GLOB) if p.name not in names) if folder.is_dir() else []
    if stale:
        raise ConfigError(
            f"{folder} already holds session files this run would not replace ({', '.join(stale)}); "
            "remove them or choose another --out folder"
        )
    common = {
        "synthetic_kind": "multisession",
        "synthetic_params": json.dumps(params, sort_keys=True),
        "n_sessions": len(sessions),
    }
    return [
        write_lfads_h5(folder / name, arrays, {**common, "session_index": s}, compression=True)
        for s, (name, arrays) in enumerate(zip(names, sessions))
    ]


def session_neuron_counts(neurons_per_session: str | Sequence[int], n_sessions: int) -> list[int]:
    """One neuron count per session from "25,30,35" (or a sequence of ints); a single count applies to all."""
    if n_sessions < 1:
        raise ConfigError(f"n_sessions (--n-sessions) must be >= 1, got {n_sessions}")
    text = neurons_per_session if isinstance(neurons_per_session, str) else ",".join(map(str, neurons_per_session))
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"neurons_per_session (--neurons-per-session) must be comma-separated whole neuron counts such as "
            f"25,30,35; got {neurons_per_session!r}"
        ) from None
    if len(counts) == 1:
        counts *= n_sessions
    elif len(counts) != n_sessions:
        raise ConfigError(
            f"neurons_per_session (--neurons-per-session) gives {len(counts)} neuron counts for "
            f"n_sessions={n_sessions}; "
            "give one count per session or a single count for all"
        )
    if min(counts) < 1:
        raise ConfigError(f"neurons_per_session (--neurons-per-session) must be counts >= 1, got {text}")
    return counts
