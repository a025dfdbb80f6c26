"""The embedded search in worker processes: the plan, population state slices, W = 1 vs W = 2, exact
cross-worker exploits, and kill -9 of the driver or of a worker (a clear error, a resume, no orphans)."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from autolfads.errors import ConfigError
from autolfads.search import embedded
from autolfads.search.placement import plan_workers
from autolfads.search.results import SearchSettings
from autolfads.search.run import search
from autolfads.search.workers import MemberSlice, ProcessWorkers, axis_groups
from autolfads.train.checkpoint import load_checkpoint
from autolfads.train.population_state import PopulationState
from autolfads.train.run import load_run_data
from autolfads.train.trainer import Trainer
from helpers import TINY_OVERRIDES, read_csv, tiny_config, tiny_search_data

SETTINGS = SearchSettings(population=4, epochs_per_generation=2, max_generations=3, seed=3)
# Evaluation reduces over members in one tensor, so a metric's last bits can depend on the slice's size;
# training, weights, Adam state and every decision do not (checked exactly).
METRIC_RTOL = 1e-6


@pytest.fixture(scope="module")
def lorenz(tmp_path_factory) -> Path:
    return tiny_search_data(tmp_path_factory.mktemp("data") / "lorenz.h5")


# ------------------------------------------------------------------------------------------------ the plan
def test_plan_fills_the_cpus_and_never_oversubscribes():
    plan = plan_workers(8, cpus=2)
    assert plan.members == ((0, 1, 2, 3), (4, 5, 6, 7)) and plan.threads == (1, 1)
    plan = plan_workers(4, cpus=16)  # fewer members than CPUs: a worker each, the CPUs shared out
    assert plan.members == ((0,), (1,), (2,), (3,)) and plan.threads == (4, 4, 4, 4)
    plan = plan_workers(5, cpus=3)
    assert plan.members == ((0, 1), (2, 3), (4,)) and plan.threads == (1, 1, 1)
    assert plan_workers(3, cpus=8, workers=2).threads == (4, 4)
    assert plan_workers(3, cpus=5, workers=2).threads == (3, 2)
    assert plan_workers(8, cpus=16, gpus=(0,)).members == (tuple(range(8)),)
    assert plan_workers(8, cpus=2, workers=4, threads=2).threads == (2, 2, 2, 2)  # asked for: given
    assert (
        "8 members on 2 workers (4 members and 1 torch thread each; 2 usable CPUs)"
        in plan_workers(8, cpus=2).describe()
    )
    for workers in (0, 9):
        with pytest.raises(ConfigError, match="--workers"):
            plan_workers(8, cpus=2, workers=workers)


def test_a_cpu_worker_trains_its_members_as_axes_of_two():
    assert (
        plan_workers(8, cpus=2).members_per_axis == 2 and plan_workers(8, cpus=16, gpus=(0,)).members_per_axis is None
    )
    assert "trained as axes of <= 2 members" in plan_workers(8, cpus=2).describe()
    assert axis_groups(4, 2) == [[0, 1], [2, 3]]
    assert axis_groups(5, 2) == [[0, 1], [2, 3], [4]]
    assert axis_groups(3, 2) == [[0, 1], [2]]
    assert axis_groups(2, 2) == axis_groups(2, None) == [[0, 1]]
    assert axis_groups(1, 2) == [[0]]


# ------------------------------------------------------------------------------------------------ population state
@pytest.fixture(scope="module")
def trained(lorenz):
    config, data = load_run_data(tiny_config(), lorenz)
    trainer = Trainer(
        config, data, population=[{"lr_init": 0.01 * (m + 1)} for m in range(4)], member_seeds=[0, 1, 2, 3]
    )
    trainer.run_epoch()
    trainer.run_epoch()
    return trainer


def identical(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Equal shape and values, NaN where the other is NaN (training state starts at NaN, e.g. a smoothed metric)."""
    return x.shape == y.shape and bool(((x == y) | (x.isnan() & y.isnan())).all())


def assert_states_equal(a: PopulationState, b: PopulationState) -> None:
    for x, y in zip(a.tensors(), b.tensors(), strict=True):
        assert identical(x, y)
    assert a.hparams == b.hparams and a.epoch == b.epoch
    assert all(torch.equal(x, y) for x, y in zip(a.rng["members"], b.rng["members"], strict=True))
    assert a.history == b.history


def test_slices_join_back_into_the_same_state(trained):
    state = trained.population_state()
    parts = [(2, 0), (3, 1)]  # any split, any order
    joined = PopulationState.join([state.select(part) for part in parts], parts)
    assert_states_equal(joined, state.select(range(4)))
    with pytest.raises(ValueError, match="not each of"):
        PopulationState.join([state.select([0])], [[1]])


def test_copying_a_member_copies_every_member_tensor_and_keeps_its_random_stream(trained):
    before = trained.population_state().select(range(4))
    state = before.select(range(4))
    state.copy_member(1, 3)
    assert state.checksum(3) == state.checksum(1) != before.checksum(3)
    for copied, original in zip(state.tensors(), before.tensors(), strict=True):
        assert identical(copied[3], original[1])  # weights, Adam, training state: the winner's
        assert identical(copied[:3], original[:3])  # nobody else changes
    assert state.hparams == [*before.hparams[:3], before.hparams[1]]
    assert torch.equal(state.rng["members"][3], before.rng["members"][3])  # its own random stream stays
    assert not torch.equal(state.rng["members"][3], state.rng["members"][1])
    assert [row for row in state.history if row["member"] == 3] == [r for r in before.history if r["member"] == 3]


def test_a_state_copied_across_workers_arrives_exactly(trained, lorenz):
    """Member 0 (worker 0) copied into member 3 (worker 1): worker 1 holds exactly the copied weights and Adam state."""
    config, data = load_run_data(tiny_config(), lorenz)
    state = trained.population_state().select(range(4))
    state.copy_member(0, 3)
    plan = plan_workers(4, cpus=2)
    pool = ProcessWorkers(plan, config, data, state.hparams, [0, 1, 2, 3], log=lambda line: None)
    try:
        pool.load([state.without_history().select(members) for members in plan.members])
        back = PopulationState.join(pool.train(0, nlb=False, on_epoch=lambda done, total: None), plan.members)
    finally:
        pool.close()
    assert_states_equal(back, state.without_history())
    assert all(process.poll() is not None for process in pool.processes)


def test_a_slice_as_axes_of_two_trains_as_one_axis(lorenz):
    """4 members as axes of 2 trained in turn: the same weights, Adam state, training state and random streams
    as one axis of 4, and the state loads back into the axes."""
    config, data = load_run_data(tiny_config(), lorenz)
    hparams = [{"lr_init": 0.01 * (m + 1)} for m in range(4)]
    states = []
    for per_axis in (None, 2):
        work = MemberSlice(config, data, hparams, [0, 1, 2, 3], per_axis)
        assert [t.population_size for t in work.trainers] == ([4] if per_axis is None else [2, 2])
        states.append(work.train(2, nlb=False, on_epoch=lambda done: None))
    one, split = states
    assert_states_equal(one.without_history(), split.without_history())
    assert [row["member"] for row in one.history] == [row["member"] for row in split.history]
    for a, b in zip(one.history, split.history, strict=True):  # metrics up to the reduction's last bits
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=METRIC_RTOL, nan_ok=True) for k in a)
    again = MemberSlice(config, data, [{}] * 4, [9, 9, 9, 9], 2)
    again.load(split)
    resumed = again.train(0, nlb=False, on_epoch=lambda done: None)
    assert_states_equal(split.without_history(), resumed.without_history())


# ------------------------------------------------------------------------------------------------ W = 1 vs W = 2
def test_one_or_two_workers_give_the_same_search(lorenz, tmp_path, monkeypatch):
    saved = {}
    real_save = embedded.save_checkpoint

    def capture(payload, path):
        saved.setdefault(path.parent.name, []).append(
            {key: payload[key] for key in ("model", "optimizer", "trainer", "search")}
        )
        real_save(payload, path)

    monkeypatch.setattr(embedded, "save_checkpoint", capture)
    for workers in (1, 2):
        search(tiny_config(), lorenz, tmp_path / f"w{workers}", SETTINGS, workers=workers, threads_per_worker=1)
    one, two = tmp_path / "w1", tmp_path / "w2"
    for name in ("state.csv", "exploits.csv"):  # the same decisions from the same metrics
        assert (one / name).read_text() == (two / name).read_text()
    for a, b in zip(read_csv(one / "metrics.csv"), read_csv(two / "metrics.csv"), strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert float(a[name]) == pytest.approx(float(b[name]), rel=METRIC_RTOL), name
    log = (two / "search.log").read_text()
    assert "4 members on 2 workers" in log and "usable CPUs), trained as axes of <= 2 members, on cpu," in log
    assert re.search(r"worker 1: pid \d+, members 2-3, 1 torch thread\(s\), on cpu", log)
    assert len(saved["w1"]) == len(saved["w2"]) == 3
    for a, b in zip(saved["w1"], saved["w2"], strict=True):  # every generation's weights and Adam state, exactly
        for name in a["model"]:
            assert torch.equal(a["model"][name], b["model"][name]), name
        for x, y in zip(
            a["optimizer"]["exp_avg"] + a["optimizer"]["exp_avg_sq"],
            b["optimizer"]["exp_avg"] + b["optimizer"]["exp_avg_sq"],
            strict=True,
        ):
            assert torch.equal(x, y)
    # some exploit crossed workers (members 0-1 | 2-3), and the copy is exact in the checkpoint after it
    crossed = [
        row
        for snapshot in saved["w2"]
        for row in snapshot["search"]["exploit_rows"]
        if (row["loser"] < 2) != (row["winner"] < 2)
    ]
    assert crossed
    for snapshot in saved["w2"]:
        generation = snapshot["search"]["generation"] - 1
        for row in snapshot["search"]["exploit_rows"]:
            if row["generation"] == generation:
                for tensor in snapshot["model"].values():
                    assert torch.equal(tensor[row["loser"]], tensor[row["winner"]])


# ------------------------------------------------------------------------------------------------ kill -9
GENERATIONS = 10  # long enough that a kill after the first lands mid-search


def search_command(lorenz: Path, workdir: Path, generations: int = GENERATIONS) -> list[str]:
    return [
        sys.executable,
        "-m",
        "autolfads.cli",
        "search",
        "--data",
        str(lorenz),
        "--population",
        "4",
        "--workdir",
        str(workdir),
        "--workers",
        "2",
        "--epochs-per-generation",
        "3",
        "--max-generations",
        str(generations),
        "--no-report",
        *TINY_OVERRIDES,
    ]


def worker_pids(workdir: Path) -> list[int]:
    return [int(pid) for pid in re.findall(r"worker \d+: pid (\d+)", (workdir / "search.log").read_text())]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pids: list[int], timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


def run_until(command: list[str], workdir: Path, rows: int, stderr: Path) -> subprocess.Popen:
    with open(stderr, "w") as err:
        process = subprocess.Popen(
            command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=err
        )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (
            (workdir / "state.csv").exists()
            and len(read_csv(workdir / "state.csv")) >= rows
            and len(worker_pids(workdir)) == 2
        ):
            return process
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the search did not reach {rows} state rows: {stderr.read_text()}")


def resume_and_check(command: list[str], workdir: Path, completed: list[dict], generations: int = GENERATIONS) -> None:
    result = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    final = read_csv(workdir / "state.csv")
    assert [(int(r["generation"]), int(r["member"])) for r in final] == [
        (g, m) for g in range(generations) for m in range(4)
    ]
    assert final[: len(completed)] == completed  # completed generations were not retrained
    assert "resumed the search" in (workdir / "search.log").read_text()
    assert result.stdout.count("search complete") == 1 and "search complete" not in result.stderr  # the summary once
    assert not wait_gone(worker_pids(workdir))


@pytest.mark.slow
def test_kill_9_of_the_driver_kills_its_workers_and_the_rerun_resumes(lorenz, tmp_path):
    workdir = tmp_path / "search"
    command = search_command(lorenz, workdir)
    process = run_until(command, workdir, rows=4, stderr=tmp_path / "stderr")
    pids = worker_pids(workdir)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not wait_gone(pids), "workers outlived their driver"
    completed = read_csv(workdir / "state.csv")
    assert 4 <= len(completed) < 4 * GENERATIONS, "the kill should land mid-search"
    resume_and_check(command, workdir, completed)


@pytest.mark.slow
def test_kill_9_of_a_worker_is_a_clear_error_and_the_rerun_resumes(lorenz, tmp_path):
    workdir = tmp_path / "search"
    command = search_command(lorenz, workdir)
    process = run_until(command, workdir, rows=4, stderr=tmp_path / "stderr")
    pids = worker_pids(workdir)
    os.kill(pids[1], signal.SIGKILL)
    process.wait(timeout=120)  # never a hang
    stderr = (tmp_path / "stderr").read_text()
    assert (
        process.returncode == 2
        and f"worker 1 (pid {pids[1]}, members 2-3) died" in stderr
        and "rerun the same command" in stderr
    )
    assert not wait_gone(pids), "a worker outlived the failed search"
    completed = read_csv(workdir / "state.csv")
    assert len(completed) % 4 == 0 and len(completed) < 4 * GENERATIONS
    resume_and_check(command, workdir, completed)


def test_a_search_stopped_on_one_worker_resumes_on_two_with_the_same_result(lorenz, tmp_path, monkeypatch):
    search(tiny_config(), lorenz, tmp_path / "whole", SETTINGS, workers=2, threads_per_worker=1)
    real_save = embedded.save_checkpoint
    saves = []

    def stop_after_the_first_generation(payload, path):
        real_save(payload, path)
        saves.append(path)
        if len(saves) == 1:
            raise KeyboardInterrupt  # as Ctrl-C right after a checkpoint

    monkeypatch.setattr(embedded, "save_checkpoint", stop_after_the_first_generation)
    with pytest.raises(KeyboardInterrupt):
        search(tiny_config(), lorenz, tmp_path / "resumed", SETTINGS, workers=1, threads_per_worker=1)
    assert load_checkpoint(tmp_path / "resumed" / "search.ckpt")["search"]["generation"] == 1
    search(tiny_config(), lorenz, tmp_path / "resumed", SETTINGS, workers=2, threads_per_worker=1)
    for name in ("state.csv", "exploits.csv"):
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "whole" / name).read_text()
    assert "resumed the search" in (tmp_path / "resumed" / "search.log").read_text()
