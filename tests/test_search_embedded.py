"""search/embedded.py: the embedded AutoLFADS search. Real PBT on the population axis, results layout,
resume, faults; the random-search control (no exploits), the time budget and the selection metric on a tiny
search."""

import math
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from autolfads.cli import main
from autolfads.errors import CheckpointError, ConfigError
from autolfads.names import ALL_METRIC, HELDIN_METRIC, SAMPLED_METRIC
from autolfads.search import embedded
from autolfads.search.pbt import plan_exploits
from autolfads.search.results import SearchSettings
from autolfads.search.run import search
from autolfads.search.space import default_search_space
from autolfads.train.checkpoint import load_checkpoint
from autolfads.train.run import load_run_data
from autolfads.train.trainer import Trainer
from helpers import TINY_OVERRIDES, read_csv, tiny_config, tiny_search_data


@pytest.fixture(scope="module")
def lorenz(tmp_path_factory) -> Path:
    return tiny_search_data(tmp_path_factory.mktemp("data") / "lorenz.h5")


Saved = namedtuple("Saved", "generation model optimizer exploits")


@pytest.fixture(scope="module")
def finished_search(lorenz, tmp_path_factory):
    """Population 4, three generations; every search checkpoint is captured as it is written."""
    saved = []
    real_save = embedded.save_checkpoint

    def capture(payload, path):
        record = payload["search"]
        copy = {name: tensor.clone() for name, tensor in payload["model"].items()}
        optimizer = {
            "exp_avg": [t.clone() for t in payload["optimizer"]["exp_avg"]],
            "steps": payload["optimizer"]["steps"].clone(),
        }
        saved.append(
            Saved(
                record["generation"] - 1,
                copy,
                optimizer,
                [row for row in record["exploit_rows"] if row["generation"] == record["generation"] - 1],
            )
        )
        real_save(payload, path)

    embedded.save_checkpoint = capture
    try:
        workdir = tmp_path_factory.mktemp("search")
        outcome = search(
            tiny_config(), lorenz, workdir, SearchSettings(population=4, epochs_per_generation=2, max_generations=3)
        )
    finally:
        embedded.save_checkpoint = real_save
    return outcome, workdir, saved


def test_search_tables_and_best_model(finished_search):
    outcome, workdir, _ = finished_search
    state = read_csv(workdir / "state.csv")
    assert [(int(r["generation"]), int(r["member"])) for r in state] == [(g, m) for g in range(3) for m in range(4)]
    # generation 0 is the burn-in: ramps (2 epochs) + one interval (2); then 2 epochs per generation
    assert [int(r["epoch"]) for r in state[::4]] == [4, 6, 8]
    metrics = read_csv(workdir / "metrics.csv")
    assert len(metrics) == 4 * 8 and {int(r["generation"]) for r in metrics} == {0, 1, 2}
    exploits = read_csv(workdir / "exploits.csv")
    # truncation: after generations 0 and 1 (none after the last) the worst of 4 copies the best
    assert [int(r["generation"]) for r in exploits] == [0, 1]
    for row in exploits:
        ranked = sorted((r for r in state if r["generation"] == row["generation"]), key=lambda r: float(r[ALL_METRIC]))
        assert (row["loser"], row["winner"]) == (ranked[-1]["member"], ranked[0]["member"])
    assert outcome.generations == 3 and 0 <= outcome.best_member < 4
    final = [float(r[ALL_METRIC]) for r in state if int(r["generation"]) == 2]
    assert outcome.best_metric == pytest.approx(min(final))
    with h5py.File(outcome.outputs[0]) as f:
        assert f["valid_rates"].shape[1:] == (20, 10) and np.all(np.asarray(f["valid_rates"]) > 0)
    best = load_checkpoint(workdir / "best_model" / "last.ckpt")
    assert best["trainer"]["members"][0] == outcome.best_hparams
    assert all(tensor.shape[0] == 1 for tensor in best["model"].values())
    assert "generation 2" in (workdir / "search.log").read_text()


def test_the_best_models_output_is_what_autolfads_sample_of_best_model_writes(finished_search, tmp_path):
    """The search samples best_model/ from its state in memory; `autolfads sample` reads best_model/last.ckpt back
    and writes the same file: every array and attribute."""
    outcome, workdir, _ = finished_search
    again = tmp_path / "again.h5"
    assert main(["sample", "--checkpoint", str(workdir / "best_model"), "--output", str(again)]) == 0
    with h5py.File(outcome.outputs[0]) as written, h5py.File(again) as sampled:
        assert set(written) == set(sampled) and set(written.attrs) == set(sampled.attrs)
        for key in written:
            assert np.array_equal(written[key][()], sampled[key][()]), key
        for key in written.attrs:
            assert np.array_equal(written.attrs[key], sampled.attrs[key]), key


def test_exploits_copy_weights_and_optimizer_state_then_perturb(finished_search):
    _, workdir, saved = finished_search
    state = read_csv(workdir / "state.csv")
    space = default_search_space()
    checked = 0
    for snapshot in saved[:2]:  # checkpoints written right after the exploits of generations 0 and 1
        pairs = [(int(row["loser"]), int(row["winner"])) for row in snapshot.exploits]
        assert len(pairs) == 1  # truncation in a population of 4: the worst copies the best
        for row, (loser, winner) in zip(snapshot.exploits, pairs):
            assert float(row["loser_metric"]) >= float(row["winner_metric"])
            for name, tensor in snapshot.model.items():
                assert torch.equal(tensor[loser], tensor[winner]), name
            for moment in snapshot.optimizer["exp_avg"]:
                assert torch.equal(moment[loser], moment[winner])
            assert snapshot.optimizer["steps"][loser] == snapshot.optimizer["steps"][winner]
            # the loser goes on with the winner's hyperparameters, perturbed, as state.csv shows next generation
            winner_row = next(
                r for r in state if int(r["generation"]) == snapshot.generation and int(r["member"]) == winner
            )
            loser_next = next(
                r for r in state if int(r["generation"]) == snapshot.generation + 1 and int(r["member"]) == loser
            )
            for name in space.params:
                assert float(loser_next[name]) == pytest.approx(row[f"new_{name}"])
                assert row[f"new_{name}"] != pytest.approx(float(winner_row[name]), rel=1e-9)
            checked += 1
    assert checked == 2


def test_rerunning_a_finished_search_retrains_nothing(finished_search, lorenz):
    outcome, workdir, _ = finished_search
    before = (workdir / "state.csv").read_text(), (workdir / "search.ckpt").read_bytes()
    again = search(
        tiny_config(), lorenz, workdir, SearchSettings(population=4, epochs_per_generation=2, max_generations=3)
    )
    assert ((workdir / "state.csv").read_text(), (workdir / "search.ckpt").read_bytes()) == before
    assert again.best_member == outcome.best_member and again.best_metric == outcome.best_metric


def test_same_seed_same_search(lorenz, tmp_path):
    settings = SearchSettings(population=3, epochs_per_generation=1, max_generations=2, seed=7)
    search(tiny_config(), lorenz, tmp_path / "a", settings)
    search(tiny_config(), lorenz, tmp_path / "b", settings)
    assert (tmp_path / "a" / "state.csv").read_text() == (tmp_path / "b" / "state.csv").read_text()
    assert (tmp_path / "a" / "exploits.csv").read_text() == (tmp_path / "b" / "exploits.csv").read_text()


def test_search_ranks_by_the_sampled_metric(lorenz, tmp_path):
    """--metric smth_val_recon_sampled (the references' ranking) needs train.sampled_metric; the exploits then
    follow it: every loser had the higher sampled metric."""
    settings = SearchSettings(population=4, epochs_per_generation=1, max_generations=2, seed=3, metric=SAMPLED_METRIC)
    with pytest.raises(ConfigError, match="needs train.sampled_metric true"):
        search(tiny_config(), lorenz, tmp_path / "refused", settings)
    config = tiny_config()
    config.train.sampled_metric = True
    search(config, lorenz, tmp_path / "run", settings)
    state = {
        (row["generation"], row["member"]): float(row[SAMPLED_METRIC])
        for row in read_csv(tmp_path / "run" / "state.csv")
    }
    exploits = read_csv(tmp_path / "run" / "exploits.csv")
    assert exploits
    for row in exploits:
        assert float(row["loser_metric"]) == pytest.approx(state[(row["generation"], row["loser"])])
        assert state[(row["generation"], row["loser"])] >= state[(row["generation"], row["winner"])]


def test_diverged_member_loses_and_is_replaced(lorenz):

    config, data = load_run_data(tiny_config(), lorenz)
    trainer = Trainer(config, data, population=[{}, {}], member_seeds=[0, 1])
    with torch.no_grad():
        trainer.model.decoder.gen_cell.weight_hh[1] = math.nan
    trainer.run_epoch()
    assert trainer.diverged.tolist() == [False, True] and math.isnan(trainer.smth_metric[1])
    exploits = plan_exploits(
        0,
        trainer.smth_metric.tolist(),
        [dict(values) for values in trainer.members],
        default_search_space(),
        np.random.default_rng(0),
    )
    assert [(e.loser, e.winner) for e in exploits] == [(1, 0)]
    state = trainer.population_state()
    state.copy_member(0, 1)
    state.set_hparams(1, exploits[0].new, config)
    trainer.load_population_state(state)
    assert not trainer.diverged[1]
    trainer.run_epoch()
    assert torch.isfinite(trainer.smth_metric).all() and not trainer.diverged.any()


def test_unwritable_or_full_workdir_fails_at_start(lorenz, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(CheckpointError, match="not writable"):
        search(
            tiny_config(),
            lorenz,
            blocker / "workdir",
            SearchSettings(population=2, epochs_per_generation=1, max_generations=1),
        )
    import autolfads.search.results as results

    monkeypatch.setattr(
        results.shutil, "disk_usage", lambda path: namedtuple("usage", "total used free")(10**9, 10**9, 1000)
    )
    with pytest.raises(CheckpointError, match="MiB free"):
        search(
            tiny_config(),
            lorenz,
            tmp_path / "full",
            SearchSettings(population=2, epochs_per_generation=1, max_generations=1),
        )
    assert not (tmp_path / "full" / "search.ckpt").exists()


def test_a_rerun_with_other_settings_is_refused(finished_search, lorenz):
    _, workdir, _ = finished_search
    with pytest.raises(ConfigError, match="different settings"):
        search(tiny_config(), lorenz, workdir, SearchSettings(population=6, epochs_per_generation=2, max_generations=3))


@pytest.mark.slow
def test_killed_search_resumes_from_the_last_completed_generation(lorenz, tmp_path):
    workdir = tmp_path / "search"
    command = [
        sys.executable,
        "-m",
        "autolfads.cli",
        "search",
        "--data",
        str(lorenz),
        "--population",
        "3",
        "--workdir",
        str(workdir),
        "--epochs-per-generation",
        "3",
        "--max-generations",
        "8",
        *TINY_OVERRIDES,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (workdir / "state.csv").exists() and len(read_csv(workdir / "state.csv")) >= 6:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    completed = read_csv(workdir / "state.csv")
    assert 6 <= len(completed) < 24, "the kill should land mid-search"
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    final = read_csv(workdir / "state.csv")
    assert [(int(r["generation"]), int(r["member"])) for r in final] == [(g, m) for g in range(8) for m in range(3)]
    assert final[: len(completed)] == completed  # completed generations were not retrained
    assert "resumed the search" in (workdir / "search.log").read_text()
    assert "search complete" in result.stdout


# ----------------------------------------------------------------------------------------- tiny searches


@pytest.mark.slow
def test_a_random_search_control_keeps_every_members_hyperparameters_and_weights(lorenz, tmp_path):
    settings = SearchSettings(population=4, epochs_per_generation=2, max_generations=3, exploit=False)
    outcome = search(tiny_config(), lorenz, tmp_path, settings)
    assert not (tmp_path / "exploits.csv").exists()
    state = read_csv(tmp_path / "state.csv")
    for member in range(4):
        rows = [row for row in state if int(row["member"]) == member]
        assert len(rows) == 3 and all(row["lr_init"] == rows[0]["lr_init"] for row in rows)
    best = min(
        (row for row in state if row["generation"] == "2"), key=lambda row: float(row[ALL_METRIC])
    )  # chosen as with PBT: the last generation's lowest selection metric
    assert outcome.best_member == int(best["member"]) and outcome.select_metric == ALL_METRIC


@pytest.mark.slow
def test_a_time_budget_stops_the_search_and_a_larger_one_continues_it(lorenz, tmp_path):
    """A budget far smaller than one generation: the search stops after generation 0 with best_model and the
    ensemble written; a rerun with a huge budget continues (counting the time spent) up to --max-generations."""
    tight = SearchSettings(population=2, epochs_per_generation=2, max_generations=3, time_budget_s=0.01)
    outcome = search(tiny_config(), lorenz, tmp_path, tight)
    assert outcome.generations == 1 and outcome.stop_reason == "time_budget"
    assert (tmp_path / "best_model" / "lfads_output.h5").is_file() and outcome.ensemble is not None
    spent = outcome.wall_time_s
    again = search(tiny_config(), lorenz, tmp_path, tight)  # the same budget: nothing more to train
    assert again.generations == 1 and again.wall_time_s == spent
    larger = search(tiny_config(), lorenz, tmp_path, tight.model_copy(update={"time_budget_s": 3600.0}))
    assert larger.generations == 3 and larger.stop_reason == "max_generations" and larger.wall_time_s > spent
    assert len(read_csv(tmp_path / "exploits.csv")) == 2 * 1  # after generations 0 and 1, one pair each
    with pytest.raises(ConfigError, match="different settings"):
        search(tiny_config(), lorenz, tmp_path, tight.model_copy(update={"population": 3}))


@pytest.mark.slow
def test_the_selection_metric_ranks_the_search_and_a_resume_keeps_it(lorenz, tmp_path):
    config = tiny_config()
    config.train.select_metric = HELDIN_METRIC
    settings = SearchSettings(population=4, epochs_per_generation=2, max_generations=2, seed=5)
    outcome = search(config, lorenz, tmp_path, settings)
    state = [row for row in read_csv(tmp_path / "state.csv") if row["generation"] == "0"]
    for row in read_csv(tmp_path / "exploits.csv"):
        loser, winner = (next(r for r in state if r["member"] == row[key]) for key in ("loser", "winner"))
        assert float(row["loser_metric"]) == pytest.approx(float(loser[HELDIN_METRIC]))
        assert float(loser[HELDIN_METRIC]) >= float(winner[HELDIN_METRIC])
    assert outcome.select_metric == HELDIN_METRIC and torch.isfinite(torch.tensor(outcome.best_metric))
    resumed = search(tiny_config(), lorenz, tmp_path, settings)  # the config now names the default: kept
    assert resumed.select_metric == HELDIN_METRIC and resumed.best_member == outcome.best_member
    assert "train.select_metric stays smth_val_nll_heldin" in (tmp_path / "search.log").read_text()
