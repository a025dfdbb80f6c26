"""Shared helpers for the model and training tests: tiny configs, in-memory data and a NumPy reference cell."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from autolfads.config import Config, ModelConfig, TrainConfig
from autolfads.data.dataset import LFADSData, Split
from autolfads.data.synthetic import write_synthetic

# Small enough that a forward pass takes milliseconds, big enough that every part of the model is exercised.
TINY_MODEL = dict(
    data_dim=6,
    cs_dim=2,
    seq_len=12,
    fp_len=2,
    ext_input_dim=0,
    ic_enc_dim=5,
    ci_enc_dim=4,
    con_dim=4,
    co_dim=2,
    ic_dim=3,
    gen_dim=7,
    fac_dim=3,
    dropout_rate=0.2,
    cd_rate=0.3,
)


def model_config(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY_MODEL, **overrides})


def train_config(**overrides) -> TrainConfig:
    base = dict(batch_size=16, max_epochs=100, device="cpu", kl_increase_epoch=2, l2_increase_epoch=2, seed=0)
    return TrainConfig(**{**base, **overrides})


def config(model: dict | None = None, train: dict | None = None) -> Config:
    return Config(model=model_config(**(model or {})), train=train_config(**(train or {})))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def numpy_gru_step(x, h, w_ih, w_hh, bias, clip):
    """The spec's cell for one member, float64: gate order z, r, n; reset before the matmul; no h-h bias.

    x (B, in), h (B, H), w_ih (in, 3H), w_hh (H, 3H), bias (3H,).
    """
    hidden = h.shape[-1]
    x_proj = x @ w_ih + bias
    z = sigmoid(x_proj[:, :hidden] + h @ w_hh[:, :hidden])
    r = sigmoid(x_proj[:, hidden : 2 * hidden] + h @ w_hh[:, hidden : 2 * hidden])
    n = np.tanh(x_proj[:, 2 * hidden :] + (r * h) @ w_hh[:, 2 * hidden :])
    return np.clip(z * h + (1 - z) * n, -clip, clip)


def numpy_gru_sequence(x, h0, w_ih, w_hh, bias, clip):
    """x (B, T, in), h0 (B, H) -> states (B, T, H)."""
    states, h = [], h0
    for t in range(x.shape[1]):
        h = numpy_gru_step(x[:, t], h, w_ih, w_hh, bias, clip)
        states.append(h)
    return np.stack(states, axis=1)


def member(param: torch.Tensor, p: int) -> np.ndarray:
    """Member p of a population tensor as float64 NumPy."""
    return param[p].detach().double().numpy()


def randomize_(module: torch.nn.Module, seed: int, scale: float = 0.5) -> None:
    """Overwrite every parameter with random values (biases included), so no test relies on init values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * scale)


def make_split(name: str, n: int, cfg: ModelConfig, rng: np.random.Generator, rates: np.ndarray | None = None) -> Split:
    t_recon, n_recon = cfg.recon_seq_len, cfg.recon_dim
    if rates is None:
        rates = rng.uniform(0.5, 3.0, size=(n, t_recon, n_recon))
    counts = rng.poisson(rates).astype(np.float32)
    recon = torch.from_numpy(counts)
    encod = recon[:, : cfg.encod_seq_len, : cfg.encod_dim].clone()
    ext = None
    if cfg.ext_input_dim:
        ext = torch.from_numpy(rng.normal(size=(n, t_recon, cfg.ext_input_dim)).astype(np.float32))
    truth = torch.from_numpy(rates.astype(np.float32))
    return Split(name, encod, recon, ext, truth, np.arange(n))


def make_data(
    cfg: ModelConfig, n_train: int = 40, n_valid: int = 10, seed: int = 0, learnable: bool = False
) -> LFADSData:
    """Random Poisson counts shaped for cfg. `learnable`: rates follow a few smooth latent trajectories shared
    by all trials (one per trial class), so a model can lower its loss below the null model's."""
    rng = np.random.default_rng(seed)
    splits = {}
    loadings = rng.normal(size=(2, cfg.recon_dim))
    times = np.linspace(0, 2 * np.pi, cfg.recon_seq_len)
    for name, n in (("train", n_train), ("valid", n_valid)):
        rates = None
        if learnable:
            phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
            latents = np.stack([np.sin(times + phase), np.cos(2 * times + phase)], -1)  # (n, T, 2)
            rates = np.exp(0.3 + 1.2 * np.tanh(latents @ loadings))
        splits[name] = make_split(name, n, cfg, rng, rates)
    return LFADSData(Path("in-memory"), "encod_recon", splits["train"], splits["valid"], None, None)


def ar_kl_by_hand(mean, std, tau, nvar):
    """KL(N(mean, diag std^2) || stationary AR(1) prior) per member and trial, summed over dims: the prior as a
    T-dimensional Gaussian with covariance v0 a^|i-j| (v0 = nvar / (1 - a^2)), the Gaussian KL formula."""
    P, B, T, D = mean.shape
    out = np.zeros((P, B))
    lags = np.abs(np.subtract.outer(np.arange(T), np.arange(T)))
    for p in range(P):
        for d in range(D):
            a = np.exp(-1.0 / tau[p, d])
            cov = nvar[p, d] / (1 - a**2) * a**lags
            precision = np.linalg.inv(cov)
            for b in range(B):
                m, var = mean[p, b, :, d], std[p, b, :, d] ** 2
                out[p, b] += 0.5 * (
                    np.trace(precision * var) + m @ precision @ m - T + np.linalg.slogdet(cov)[1] - np.log(var).sum()
                )
    return out


# A tiny search: its model, the same as KEY VALUE overrides, a config and a small Lorenz set
TINY = dict(ic_enc_dim=8, ci_enc_dim=8, con_dim=8, co_dim=1, ic_dim=8, gen_dim=16, fac_dim=4)
TINY_OVERRIDES = [item for key, value in TINY.items() for item in (f"model.{key}", str(value))] + [
    "train.batch_size",
    "16",
    "train.kl_increase_epoch",
    "2",
    "train.l2_increase_epoch",
    "2",
]


def tiny_config() -> Config:
    return Config(model=ModelConfig(**TINY), train=TrainConfig(batch_size=16, kl_increase_epoch=2, l2_increase_epoch=2))


def tiny_search_data(path: Path) -> Path:
    return write_synthetic("lorenz", path, n_conditions=8, trials_per_condition=5, seq_len=20, n_neurons=10)


def set_member_hparams(trainer, member: int, values: dict[str, float]) -> None:
    """New hyperparameters for one member of a live Trainer, the way the search gives them: on its state."""
    state = trainer.population_state()
    state.set_hparams(member, values, trainer.config)
    trainer.load_population_state(state)


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def gamma_data(cfg, n_train=48, n_valid=16, seed=3, zeros=0.0) -> LFADSData:
    """Gamma-distributed observations (shape 3) around smooth per-trial means; `zeros` of them set to 0."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(2, cfg.recon_dim))
    times = np.linspace(0, 2 * np.pi, cfg.recon_seq_len)
    splits = {}
    for name, n in (("train", n_train), ("valid", n_valid)):
        phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
        latents = np.stack([np.sin(times + phase), np.cos(2 * times + phase)], -1)
        means = np.exp(0.3 + 1.0 * np.tanh(latents @ loadings))
        values = rng.gamma(3.0, means / 3.0)
        values[rng.uniform(size=values.shape) < zeros] = 0.0
        recon = torch.from_numpy(values.astype(np.float32))
        encod = recon[:, : cfg.encod_seq_len, : cfg.encod_dim].clone()
        splits[name] = Split(name, encod, recon, None, torch.from_numpy(means.astype(np.float32)), np.arange(n))
    return LFADSData(Path("in-memory"), "encod_recon", splits["train"], splits["valid"], None, None)
