"""model/readin_readout.py: the PCR read-in/read-out of multi-session (stitched) LFADS by hand, its signs
and dimensions, the mean parameter per observation model, its checks, its loading into every member, fixed vs
trained read-ins, and the random-init alternative."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from autolfads.config import Config, ModelConfig, apply_overrides
from autolfads.errors import ConfigError
from autolfads.model.readin_readout import PINV_RCOND, pcr, pcr_session_inits
from autolfads.model.reconstruction import make_reconstruction
from autolfads.train.run import load_run_data, train
from autolfads.train.trainer import Trainer
from data_files import NEURONS, write_sessions

TINY = {
    "ic_enc_dim": 8,
    "ci_enc_dim": 4,
    "con_dim": 4,
    "co_dim": 2,
    "ic_dim": 4,
    "gen_dim": 12,
    "fac_dim": 5,
    "dropout_rate": 0.1,
}


def tiny_config(**model) -> Config:
    train = {
        "batch_size": 16,
        "max_epochs": 4,
        "kl_increase_epoch": 1,
        "l2_increase_epoch": 1,
        "num_samples": 2,
        "device": "cpu",
        "seed": 0,
    }
    return Config.model_validate({"model": {**TINY, **model}, "train": train})


@pytest.fixture(scope="module")
def sessions_dir(tmp_path_factory) -> Path:
    return write_sessions(tmp_path_factory.mktemp("sessions") / "data")


# ---------------------------------------------------------------- PCR, pure maths


def test_pcr_by_hand_two_sessions_one_neuron_each():
    # A: 1, 2, 3 (mean 2); B: 2, 4, 6 (mean 4). Centred side by side: [[-1, -2], [0, 0], [1, 2]], one direction
    # v = (1, 2) / sqrt(5), scores (-sqrt 5, 0, sqrt 5), rescaled by rms(data) / rms(scores) = 1 / sqrt 2.
    a, b = np.array([[1.0], [2.0], [3.0]]), np.array([[2.0], [4.0], [6.0]])
    weights, means, scores = pcr([a, b], dim=1)
    s = math.sqrt(2.5)
    np.testing.assert_allclose(scores[:, 0], [-s, 0, s], atol=1e-12)
    np.testing.assert_allclose(means, [[2.0], [4.0]])
    np.testing.assert_allclose(weights[0], [[s]], atol=1e-12)  # lstsq((-1, 0, 1), scores)
    np.testing.assert_allclose(weights[1], [[s / 2]], atol=1e-12)
    # with two dimensions the second component carries nothing and the scale factor is 1
    weights2, _, scores2 = pcr([a, b], dim=2)
    np.testing.assert_allclose(scores2[:, 0], [-math.sqrt(5), 0, math.sqrt(5)], atol=1e-12)
    np.testing.assert_allclose(scores2[:, 1], 0, atol=1e-12)


def test_pcr_maps_every_session_to_the_same_point_per_condition():
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(40, 3))  # conditions x bins, 3 shared latents
    sessions = [latents @ rng.normal(size=(3, n)) + rng.uniform(1, 3, size=n) for n in (5, 8, 4)]
    weights, means, _ = pcr(sessions, dim=3)
    read_in = [(x - m) @ w for x, m, w in zip(sessions, means, weights, strict=True)]
    np.testing.assert_allclose(read_in[0], read_in[1], atol=1e-9)
    np.testing.assert_allclose(read_in[0], read_in[2], atol=1e-9)
    # the read-out pinv(W) undoes the read-in on the session's own (rank <= dim) data
    for x, m, w in zip(sessions, means, weights, strict=True):
        np.testing.assert_allclose((x - m) @ w @ np.linalg.pinv(w), x - m, atol=1e-9)


def test_pcr_signs_are_fixed_and_extra_dimensions_are_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 2))
    weights, _, scores = pcr([x, -x[:, ::-1]], dim=6)  # rank 2: four of six dimensions are empty
    assert np.allclose(scores[:, 4:], 0)
    flipped_weights, _, flipped = pcr(
        [-x, x[:, ::-1]], dim=6
    )  # the same data negated: same scores up to the fixed sign
    np.testing.assert_allclose(np.abs(flipped), np.abs(scores), atol=1e-9)
    assert weights[0].shape == (2, 6)


def test_mean_parameter_per_observation_model():
    mean = np.array([0.5, 2.0])
    for name, index in (("poisson", 0), ("gaussian", 0), ("gamma", 1), ("zig", 1)):
        recon = make_reconstruction(ModelConfig(reconstruction=name))
        param, value, sign = recon.mean_parameter(mean)
        assert param == index
        params = torch.zeros(2, recon.n_params, dtype=torch.float64)
        params[:, param] = torch.as_tensor(value)
        np.testing.assert_allclose(recon.mean(params).numpy(), mean, rtol=1e-12)  # the read-out starts at the means
        shifted = params.clone()
        shifted[:, param] += sign * 1e-3  # moving the parameter along `sign` raises the mean
        assert (recon.mean(shifted) > recon.mean(params)).all()


def test_pcr_needs_matching_readin_dim_and_condition_labels(tmp_path, sessions_dir):
    with pytest.raises(ConfigError, match="readin_dim .7. must equal fac_dim"):
        apply_overrides(tiny_config(), ["model.readin_dim", "7"])
    tiny_config(readin_dim=7, readin_init="random")  # fine without PCR
    folder = write_sessions(tmp_path / "nocond", drop=("train_cond_idx", "valid_cond_idx"))
    config, sessions = load_run_data(tiny_config(), folder)
    with pytest.raises(ConfigError, match="no train_cond_idx.*readin_init random"):
        Trainer(config, sessions)
    config, sessions = load_run_data(tiny_config(readin_init="random"), folder)
    Trainer(config, sessions)  # the random initialisation needs no conditions


# ---------------------------------------------------------------- the model


def test_pcr_initialisation_is_loaded_into_every_member(sessions_dir):
    config, sessions = load_run_data(tiny_config(), sessions_dir)
    trainer = Trainer(config, sessions, population=[{}, {}], member_seeds=[0, 1])
    model = trainer.model
    inits = pcr_session_inits(sessions, config.model, model.reconstruction)
    for s, (readin, readout) in enumerate(zip(model.readin, model.readout, strict=True)):
        for p in range(2):
            np.testing.assert_allclose(readin.weight[p].detach().numpy(), inits[s].readin_weight, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(readin.bias[p].detach().numpy(), inits[s].readin_bias, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(
                readout.bias[p].detach().numpy(), inits[s].readout_bias[:, 0], rtol=1e-6
            )  # Poisson: log means
            pinv = np.linalg.pinv(
                inits[s].readin_weight, rcond=PINV_RCOND
            )  # (D, held-in neurons): held-in read-out columns
            np.testing.assert_allclose(
                readout.weight[p].detach().numpy()[:, : pinv.shape[1]], pinv, rtol=1e-5, atol=1e-6
            )
        means = sessions[s].train.recon[:, : config.model.encod_seq_len].mean((0, 1)).numpy()
        np.testing.assert_allclose(np.exp(inits[s].readout_bias[:, 0]), np.maximum(means, 1e-3), rtol=1e-5)
        assert not readin.weight.requires_grad  # fixed by default
    out = model(sessions[1].valid.encod[:4], torch.zeros(2), session=1, sample=False)
    assert out.rates.shape == (2, 4, config.model.seq_len, NEURONS[1])


def test_fixed_readin_stays_and_trained_readin_moves(sessions_dir):
    for train_readin in (False, True):
        config, sessions = load_run_data(tiny_config(train_readin=train_readin), sessions_dir)
        trainer = Trainer(config, sessions)
        before = [m.weight.detach().clone() for m in trainer.model.readin]
        readout_before = trainer.model.readout[2].weight.detach().clone()
        trainer.run_epoch()
        moved = [not torch.equal(b, m.weight) for b, m in zip(before, trainer.model.readin, strict=True)]
        assert moved == [train_readin] * 3
        assert not torch.equal(readout_before, trainer.model.readout[2].weight)  # read-outs always train


def test_random_init_alternative_trains(sessions_dir, tmp_path):
    result = train(
        tiny_config(readin_init="random", train_readin=True, readin_dim=6), sessions_dir, tmp_path / "random", echo=None
    )
    assert result.epochs == 4 and math.isfinite(result.metrics["val_nll_heldin"])
