"""Multi-session (stitched) models: each session's read-in and read-out, and their PCR initialisation.

Session s records N_s neurons. Its read-in maps its held-in neurons to the shared space the encoders read
(model.input_dim), its read-out maps the shared factors to its own neurons. Principal-components regression
(Pandarinath et al. 2018) starts every session in one common space:

    X_s   condition-averaged held-in data of session s, (conditions x bins, N_s), centred by its means mu_s
    Z     top principal-component scores of [X_1 ... X_S] (all sessions' neurons side by side)
    W_s   = lstsq(X_s, Z)           read-in:  x -> (x - mu_s) W_s, fixed by default (model.train_readin)
    R_s   = pinv(W_s)               read-out: factors -> link(mu_s) + f R_s in the mean's output parameter

so a trial of any session lands where the same condition of every other session does. As in lfads-torch the
pseudo-inverse goes into the output parameter as it is. Two measured choices keep the start stable: R_s is
not scaled by the link's slope (1/mu for a log link: low-rate neurons then get huge weights and the first
epochs overflow), and pinv drops singular values below PINV_RCOND of the largest (components a session
barely expresses would otherwise get read-out rows of norm ~10 from noise).
"""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import ModelConfig
from ..data.dataset import LFADSData
from ..errors import ConfigError
from .reconstruction import Reconstruction

PINV_RCOND = 0.1


@dataclass(frozen=True)
class SessionInit:
    """Initial read-in (N_enc, D) with its bias (D,), and read-out (D, N_recon, n_params) with bias
    (N_recon, n_params)."""

    readin_weight: np.ndarray
    readin_bias: np.ndarray
    readout_weight: np.ndarray
    readout_bias: np.ndarray
    mean_param: int  # the output parameter the read-out's PCR initialisation sets; the others keep their random start


def pcr(averages: Sequence[np.ndarray], dim: int) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Principal-components regression. averages: per session (rows, N_s), rows = the same conditions x bins in
    every session. -> read-in weights W_s (N_s, dim), session means mu_s (N_s,), scores Z (rows, dim).

    Z holds the top min(dim, rank) components (zero columns beyond), each signed so its largest loading is
    positive (SVD signs are arbitrary), and rescaled by one factor to the RMS of the centred data, so the
    encoders see inputs of the data's scale whatever the number of neurons.
    """
    means = [a.mean(axis=0) for a in averages]
    centred = [a - m for a, m in zip(averages, means, strict=True)]
    together = np.concatenate(centred, axis=1)
    _, _, vt = np.linalg.svd(together, full_matrices=False)
    k = min(dim, vt.shape[0])
    components = vt[:k].T
    components = components * np.sign(components[np.argmax(np.abs(components), axis=0), np.arange(k)])
    scores = np.zeros((together.shape[0], dim))
    scores[:, :k] = together @ components
    rms_scores = np.sqrt(np.mean(scores[:, :k] ** 2)) if k else 0.0
    if rms_scores > 0:
        scores *= np.sqrt(np.mean(together**2)) / rms_scores
    weights = [np.linalg.lstsq(x, scores, rcond=None)[0] for x in centred]
    return weights, means, scores


def pcr_session_inits(
    sessions: Sequence[LFADSData], cfg: ModelConfig, reconstruction: Reconstruction
) -> list[SessionInit]:
    """PCR read-in and read-out of every session from its train split's condition averages (encoded bins).

    Held-in neurons read out through pinv(W_s); held-out neurons (not read in) by least squares from the scores.
    Only conditions present in every session are used.
    """
    missing = [str(s.path) for s in sessions if s.train.conditions is None]
    if missing:
        raise ConfigError(
            f"model.readin_init pcr condition-averages every session, but {', '.join(missing)} has no train_cond_idx: "
            "add each trial's condition as train_cond_idx, or set model.readin_init random"
        )
    common = sorted(set.intersection(*(set(np.unique(s.train.conditions).tolist()) for s in sessions)))
    if len(common) < 2:
        raise ConfigError(
            f"model.readin_init pcr needs conditions shared by all sessions; {len(common)} condition(s) appear in the "
            f"train_cond_idx of every one of {', '.join(str(s.path) for s in sessions)}: set model.readin_init random"
        )
    bins = cfg.session(0).encod_seq_len
    recon_averages = []  # per session (conditions x bins, N_recon): held-in neurons first
    for session in sessions:
        recon = session.train.recon[:, :bins].double().numpy()
        with warnings.catch_warnings():  # an entry missing (SBTT) in every trial of a condition averages to NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            average = np.concatenate([np.nanmean(recon[session.train.conditions == c], axis=0) for c in common])
            recon_averages.append(
                np.nan_to_num(np.where(np.isnan(average), np.nanmean(average, axis=0), average), nan=0.0)
            )
    held_in = [average[:, : session.encod_dim] for average, session in zip(recon_averages, sessions, strict=True)]
    weights, _, scores = pcr(held_in, cfg.input_dim)
    inits = []
    for session, average, weight in zip(sessions, recon_averages, weights, strict=True):
        mean = average.mean(axis=0)
        held_out = np.linalg.lstsq(scores, average[:, session.encod_dim :] - mean[session.encod_dim :], rcond=None)[0]
        readout = np.concatenate([np.linalg.pinv(weight, rcond=PINV_RCOND), held_out], axis=1)  # (D, N_recon)
        index, value, sign = reconstruction.mean_parameter(mean)
        readout_weight = np.zeros((*readout.shape, reconstruction.n_params))
        readout_bias = np.zeros((readout.shape[1], reconstruction.n_params))
        readout_weight[..., index] = sign * readout
        readout_bias[:, index] = value
        inits.append(SessionInit(weight, -mean[: session.encod_dim] @ weight, readout_weight, readout_bias, index))
    return inits
