"""Multi-session (stitched) LFADS end to end: one model over several files. The resolved config, mixed
batches, validation metrics over sessions, one output per session and an exact resume, the command line with a
glob, per-session held-out neurons and missing bins, an embedded search over sessions, and a stitched model that
recovers every session's rates."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from autolfads.cli import main
from autolfads.config import Config, SessionDims, apply_overrides
from autolfads.data.dataset import load_sessions
from autolfads.data.hdf5 import write_lfads_h5
from autolfads.data.synthetic import make_lorenz
from autolfads.errors import ConfigError
from autolfads.layout import LAST_CKPT as LAST
from autolfads.search.results import SearchSettings
from autolfads.search.run import search
from autolfads.train.checkpoint import load_checkpoint
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


def test_resolved_config_names_each_session(sessions_dir):
    config, sessions = load_run_data(tiny_config(), sessions_dir)
    assert config.model.sessions == [
        SessionDims(name=f"session_{i}", data_dim=n, cs_dim=0) for i, n in enumerate(NEURONS)
    ]
    assert config.model.data_dim is None and config.model.input_dim == config.model.fac_dim
    assert config.model.session(1).encod_dim == NEURONS[1]
    with pytest.raises(ConfigError, match="each has its own neurons"):
        _ = config.model.encod_dim
    # a config resolved for these sessions refuses other data
    with pytest.raises(ConfigError, match="model.sessions"):
        load_run_data(config, sessions_dir / "session_0.h5")


def test_one_pass_over_mixed_sessions_equals_a_pass_per_session(sessions_dir):
    """forward_sessions (training batches) concatenates the parts for the shared core: without sampling or dropout
    each trial's output equals its own session's forward pass, and the KL terms are the trial-weighted means."""
    config, sessions = load_run_data(tiny_config(), sessions_dir)
    model = Trainer(config, sessions, population=[{}, {}], member_seeds=[0, 1]).model.eval()
    no_dropout = torch.zeros(2)
    parts = [(sessions[2].train.encod[:5], 2), (sessions[0].train.encod[:3], 0), (sessions[1].train.encod[:4], 1)]
    with torch.no_grad():
        params, kl_ic, kl_co = model.forward_sessions(
            [x for x, _ in parts], [s for _, s in parts], no_dropout, [None] * 3, sample=False
        )
        alone = [model(x, no_dropout, session=s, sample=False) for x, s in parts]
    for together, own, (x, s) in zip(params, alone, parts, strict=True):
        assert together.shape == (2, x.shape[0], 20, NEURONS[s], 1)
        torch.testing.assert_close(together, own.output_params, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        kl_ic, sum(o.kl_ic * (x.shape[0] / 12) for o, (x, _) in zip(alone, parts, strict=True)), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        kl_co, sum(o.kl_co * (x.shape[0] / 12) for o, (x, _) in zip(alone, parts, strict=True)), rtol=1e-5, atol=1e-6
    )


def test_batches_mix_sessions_and_cover_every_trial_once(sessions_dir, monkeypatch):
    config, sessions = load_run_data(apply_overrides(tiny_config(), ["train.drop_last", "false"]), sessions_dir)
    trainer = Trainer(config, sessions)
    seen: list[tuple[int, list[int]]] = []
    original = trainer._training_part

    def spy(session, indices):
        seen.append((session, indices.tolist()))
        return original(session, indices)

    monkeypatch.setattr(trainer, "_training_part", spy)
    trainer.train_epoch()
    for session in range(3):
        trials = sorted(i for s, indices in seen if s == session for i in indices)
        assert trials == list(range(sessions[session].train.n_trials))
    batches = math.ceil(sum(s.train.n_trials for s in sessions) / config.train.batch_size)
    assert len(seen) > batches  # some batches hold several sessions
    sessions_per_batch = len(seen) / batches
    assert sessions_per_batch > 2


def test_one_session_model_has_no_readin_and_unchanged_numbers(lorenz_file):
    config, sessions = load_run_data(tiny_config(), lorenz_file)
    trainer = Trainer(config, sessions)
    assert trainer.model.readin is None and len(trainer.model.readout) == 1
    assert config.model.sessions == [] and config.model.input_dim == config.model.encod_dim


def test_validation_metrics_add_up_over_sessions(sessions_dir):
    """val_nll_heldin of the stitched model = the element-weighted mean of its sessions' own scores."""
    config, sessions = load_run_data(tiny_config(), sessions_dir)
    trainer = Trainer(config, sessions)
    trainer.run_epoch()
    together = trainer.evaluate("valid")
    per_session = []
    for s in range(3):
        trainer_s = Trainer(config, sessions)
        trainer_s.load_population_state(trainer.population_state())
        trainer_s.splits = [trainer.splits[s]]
        trainer_s.session_cfgs = [trainer.session_cfgs[s]]
        trainer_s.null_nll = [trainer.null_nll[s]]
        original_forward = trainer_s.model.forward
        trainer_s.model.forward = lambda *a, _s=s, _f=original_forward, **k: _f(*a, **{**k, "session": _s})
        per_session.append(
            (trainer_s.evaluate("valid"), sessions[s].valid.recon.numel(), sessions[s].valid.truth.shape[-1])
        )
    elements = sum(n for _, n, _ in per_session)
    want = sum(m["val_nll_heldin"].double() * n for m, n, _ in per_session) / elements
    torch.testing.assert_close(together["val_nll_heldin"].double(), want, rtol=1e-5, atol=0)
    neurons = sum(n for _, _, n in per_session)
    want_r2 = sum(m["val_r2"].double() * n for m, _, n in per_session) / neurons
    torch.testing.assert_close(together["val_r2"].double(), want_r2, rtol=1e-5, atol=0)


# ---------------------------------------------------------------- runs, outputs, resume, search


def test_train_writes_one_output_per_session_and_resumes_exactly(sessions_dir, tmp_path):
    config = tiny_config()
    straight = train(config, sessions_dir, tmp_path / "straight", echo=None)
    assert [p.name for p in straight.outputs] == [f"lfads_output_session_{i}.h5" for i in range(3)]
    for path, session, n in zip(straight.outputs, load_sessions(sessions_dir), NEURONS, strict=True):
        with h5py.File(path) as h5:
            assert h5["train_rates"].shape == (session.train.n_trials, 20, n)
            assert h5["valid_factors"].shape == (session.valid.n_trials, 20, TINY["fac_dim"])
            np.testing.assert_array_equal(h5["valid_inds"][()], session.valid.inds)
            assert h5.attrs["session"] == session.name
    train(config, sessions_dir, tmp_path / "paused", epochs=2, echo=None)
    resumed = train(config, sessions_dir, tmp_path / "paused", echo=None)
    assert resumed.epochs == straight.epochs == 4
    a, b = load_checkpoint(tmp_path / "straight" / LAST), load_checkpoint(tmp_path / "paused" / LAST)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_cli_train_and_sample_with_a_glob(sessions_dir, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            str(sessions_dir / "session_*.h5"),
            "--checkpoint",
            str(run),
            "--quiet",
            "--no-report",
            "train.max_epochs",
            "1",
            "train.batch_size",
            "16",
            "train.num_samples",
            "2",
            "model.gen_dim",
            "8",
            "model.fac_dim",
            "4",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in run.glob("lfads_output_*.h5")) == [f"lfads_output_session_{i}.h5" for i in range(3)]
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(run), "--output", str(tmp_path / "rates.h5"), "--num-samples", "2"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / f"rates_session_{i}.h5") for i in range(3)]


def test_sessions_with_their_own_held_out_neurons_missing_bins_and_sample_validation(tmp_path):
    """encod/recon files: each session says its held-out neurons (2, 3, none); NaN bins (SBTT) in all of them."""
    for index, (neurons, held_out) in enumerate(((10, 2), (12, 3), (8, 0))):
        lorenz = make_lorenz(n_conditions=6, trials_per_condition=5, n_neurons=neurons, seq_len=20, seed=3)
        arrays = {"conversion_factor": lorenz["conversion_factor"]}
        for split in ("train", "valid"):
            data = lorenz[f"{split}_data"].astype(np.float32)
            data[:, 3, 0] = np.nan  # missing in every trial: PCR's condition averages must still be finite
            arrays |= {
                f"{split}_encod_data": np.nan_to_num(data[:, :16, : neurons - held_out]),
                f"{split}_recon_data": data,
            }
            arrays |= {f"{split}_{key}": lorenz[f"{split}_{key}"] for key in ("cond_idx", "truth")}
        write_lfads_h5(tmp_path / "data" / f"s{index}.h5", arrays)
    config = apply_overrides(tiny_config(), ["train.sbtt", "true", "model.sv_rate", "0.1", "train.max_epochs", "2"])
    result = train(config, tmp_path / "data", tmp_path / "run", echo=None)
    assert all(
        math.isfinite(result.metrics[name])
        for name in ("val_nll_heldin", "val_nll_heldout", "val_nll_fp", "val_sv_nll", "val_co_bps", "val_r2")
    )
    saved = load_run_data(config, tmp_path / "data")[0].model.sessions
    assert [(s.data_dim, s.cs_dim) for s in saved] == [(10, 2), (12, 3), (8, 0)]
    for path, neurons in zip(result.outputs, (10, 12, 8), strict=True):
        with h5py.File(path) as h5:
            assert h5["valid_rates"].shape[1:] == (20, neurons) and np.isfinite(h5["valid_rates"][()]).all()


def test_embedded_search_over_sessions(sessions_dir, tmp_path):
    settings = SearchSettings(population=2, epochs_per_generation=1, max_generations=2, seed=0)
    outcome = search(tiny_config(), sessions_dir, tmp_path / "search", settings)
    assert outcome.generations == 2
    assert [p.name for p in outcome.outputs] == [f"lfads_output_session_{i}.h5" for i in range(3)]
    assert all(p.is_file() for p in outcome.outputs)


@pytest.mark.slow
def test_a_stitched_model_recovers_every_sessions_rates(tmp_path):
    """End to end on the synthetic multi-session set: one model over three sessions of 10-15 neurons learns
    each session's true rates (R^2 of the posterior-sampled valid rates, per session)."""
    from autolfads.config import load_config
    from autolfads.data.multisession_synthetic import write_multisession
    from autolfads.train.metrics import r2_score

    write_multisession(
        tmp_path / "data", neurons_per_session="10,12,15", n_conditions=20, trials_per_condition=8, seq_len=30, seed=4
    )
    config = apply_overrides(
        load_config(Path(__file__).parents[1] / "examples" / "configs" / "lorenz.yaml"),
        [
            "train.max_epochs",
            "40",
            "train.device",
            "cpu",
            "train.kl_increase_epoch",
            "20",
            "train.l2_increase_epoch",
            "20",
            "train.num_samples",
            "10",
        ],
    )
    result = train(config, tmp_path / "data", tmp_path / "run", echo=None)
    assert result.metrics["val_r2"] > 0.8, result.metrics
    for path, session in zip(result.outputs, load_sessions(tmp_path / "data"), strict=True):
        with h5py.File(path) as h5:
            r2 = float(r2_score(torch.from_numpy(h5["valid_rates"][()])[None], session.valid.truth))
        assert r2 > 0.75, (session.name, r2)
