"""The Ray backend on a real two-node Ray cluster on loopback: PBT semantics, driver kill + resume, node loss.

Each cluster is two `ray start` nodes (2 CPUs each) in their own sessions; teardown kills every process of
those sessions (by session id, so no other Ray instance on the machine is touched) and, on CI
(CI=true), also runs `ray stop --force`. Token authentication is turned off for these throwaway clusters
(RAY_AUTH_MODE=disabled). The deploy/ray cluster YAMLs are validated against the schema in the Ray wheel.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

ray = pytest.importorskip(
    "ray", reason="the Ray backend tests need Ray: pip install 'autolfads[ray]'", exc_type=ImportError
)

import h5py  # noqa: E402
import yaml  # noqa: E402

from autolfads.config import Config, ModelConfig, TrainConfig  # noqa: E402
from autolfads.data.synthetic import write_synthetic  # noqa: E402
from autolfads.names import ALL_METRIC  # noqa: E402
from autolfads.search.results import SearchSettings  # noqa: E402
from autolfads.search.run import search  # noqa: E402
from autolfads.search.space import default_search_space  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
SETTINGS = dict(population=4, epochs_per_generation=2, max_generations=3, backend="ray")
TINY = dict(ic_enc_dim=8, ci_enc_dim=8, con_dim=8, co_dim=1, ic_dim=8, gen_dim=16, fac_dim=4)
OUTPUT_FIELDS = (
    "rates",
    "factors",
    "gen_states",
    "gen_inputs",
    "gen_init",
    "con_states",
    "ic_mean",
    "ic_std",
    "co_means",
    "co_stds",
)
# Fast failure detection for the node-loss test: a dead node is declared after about 3 s, not 30 s.
CLUSTER_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "OMP_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}


# ------------------------------------------------------------------------------------------------ cluster
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(session: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == session:
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def kill_session(session: int) -> None:
    """SIGKILL every process of a session we started (the node's raylet, GCS, agents and workers)."""
    for _ in range(5):
        pids = session_pids(session)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


class LoopbackCluster:
    """A head and one worker node on 127.0.0.1, each started by `ray start` in a session of its own."""

    def __init__(self) -> None:
        self.env = {**os.environ, **CLUSTER_ENV}
        self.temp_dir = tempfile.mkdtemp(prefix="alr")  # short: Ray's socket paths must stay under 108 bytes
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.sessions: list[int] = []

    def _ray_start(self, *args: str) -> int:
        process = subprocess.Popen(
            [RAY, "start", *args],
            env=self.env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.sessions.append(process.pid)
        output, _ = process.communicate(timeout=90)
        assert process.returncode == 0, output
        return process.pid

    def start(self) -> LoopbackCluster:
        self.head = self._ray_start(
            "--head",
            "--port",
            str(self.port),
            "--num-cpus",
            "2",
            "--node-ip-address",
            "127.0.0.1",
            "--include-dashboard=false",
            "--ray-client-server-port",
            str(free_port()),
            "--temp-dir",
            self.temp_dir,
        )
        self.worker = self._ray_start("--address", self.address, "--num-cpus", "2")
        return self

    def kill_worker(self) -> None:
        kill_session(self.worker)

    def stop(self) -> None:
        for session in reversed(self.sessions):
            kill_session(session)
        if os.environ.get("CI"):  # dedicated CI machines: also whatever a crashed test left behind
            subprocess.run([RAY, "stop", "--force"], env=self.env, capture_output=True, timeout=60)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def running_cluster():
    """A fresh two-node cluster, ALWAYS torn down (also when the test fails or times out)."""
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the driver in this process talks to the unauthenticated cluster
    loopback = LoopbackCluster()
    try:
        yield loopback.start()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        loopback.stop()
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


@pytest.fixture(scope="module")
def cluster():
    """Shared by the tests that leave the cluster whole."""
    with running_cluster() as loopback:
        yield loopback


@pytest.fixture
def own_cluster():
    """For a test that kills a node."""
    with running_cluster() as loopback:
        yield loopback


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging CI: SIGALRM raises in the main thread (where Tune's loop runs)."""

    def expired(signum, frame):
        raise TimeoutError(f"the search took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ------------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def lorenz(tmp_path_factory) -> Path:
    return write_synthetic(
        "lorenz",
        tmp_path_factory.mktemp("data") / "lorenz.h5",
        n_conditions=8,
        trials_per_condition=5,
        seq_len=20,
        n_neurons=10,
    )


def tiny_config() -> Config:
    return Config(
        model=ModelConfig(**TINY),
        train=TrainConfig(batch_size=16, kl_increase_epoch=1, l2_increase_epoch=1, num_samples=5, device="cpu"),
    )


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_same_state(state: list[dict], other: list[dict], space) -> None:
    """Two state.csv tables agree row by row: hyperparameters and positions exactly, metrics to float rounding."""
    for ours, theirs in zip(state, other):
        for name, value in theirs.items():
            if name in space.params or name in ("generation", "member", "epoch"):
                assert ours[name] == value, (name, ours, theirs)
            else:
                assert math.isclose(float(ours[name]), float(value), rel_tol=1e-4, abs_tol=1e-6), (
                    name,
                    ours[name],
                    value,
                )


def read_reports(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "ray" / "reports.jsonl").read_text().splitlines() if line.strip()]


def assert_synchronous(reports: list[dict]) -> None:
    """No member started a generation before every member had reported the one before."""
    for generation in range(1, max(r["generation"] for r in reports) + 1):
        assert min(r["started_at"] for r in reports if r["generation"] == generation) > max(
            r["time"] for r in reports if r["generation"] == generation - 1
        ), generation


def processes_by_member(reports: list[dict]) -> dict[int, int]:
    """How many trial processes trained each member over the search."""
    pids: dict[int, set] = {}
    for r in reports:
        pids.setdefault(r["member"], set()).add((r["node_id"], r["pid"]))
    return {member: len(found) for member, found in sorted(pids.items())}


def completed_generations(workdir: Path) -> int:
    try:
        rows = read_csv(workdir / "state.csv")
    except (FileNotFoundError, csv.Error):
        return 0
    return len({row["generation"] for row in rows if row.get("generation")})


DRIVER = textwrap.dedent(
    """
    import sys
    from autolfads.config import Config
    from autolfads.search.results import SearchSettings
    from autolfads.search.run import search
    config = Config.model_validate_json(sys.argv[1])
    search(
        config, sys.argv[2], sys.argv[3], SearchSettings(**{settings!r}), address=sys.argv[4], cpus_per_member=1,
        **{options!r},
    )
    """
)


def driver(
    tmp_path: Path, lorenz: Path, workdir: Path, address: str, generations: int = SETTINGS["max_generations"], **options
) -> list[str]:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(settings={**SETTINGS, "max_generations": generations}, options=options))
    return [sys.executable, str(script), tiny_config().model_dump_json(), str(lorenz), str(workdir), address]


def start_driver(command: list[str], log: Path) -> subprocess.Popen:
    """The driver in a process of its own, its output in a file (a full pipe would block it)."""
    with open(log, "w") as out:
        return subprocess.Popen(command, env={**os.environ, **CLUSTER_ENV}, stdout=out, stderr=subprocess.STDOUT)


def wait_for(
    condition, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"the driver exited ({process.returncode}) before {what}:\n{log.read_text() if log else ''}"
            )
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def check_complete(workdir: Path, generations: int = SETTINGS["max_generations"]) -> list[dict]:
    state = read_csv(workdir / "state.csv")
    keys = Counter((int(row["generation"]), int(row["member"])) for row in state)
    expected = {(g, m) for g in range(generations) for m in range(SETTINGS["population"])}
    assert set(keys) == expected and set(keys.values()) == {1}, keys
    return state


# ------------------------------------------------------------------------------------------------ tests
def assert_restores_follow_exploits(members: list[dict], exploits: list[dict]) -> list[tuple[int, int]]:
    """Every trial restored the checkpoint of its member's winner (or its own), byte for byte: weights and Adam
    state copied exactly. Returns (member, source) of every restore."""
    report = {(int(r["generation"]), int(r["member"])): r for r in members}
    winners = {(int(e["generation"]), int(e["loser"])): int(e["winner"]) for e in exploits}
    restores = []
    for (generation, member), row in report.items():
        if generation == 0:
            assert row["restored_member"] == "-1"
            continue
        source = winners.get((generation - 1, member), member)
        assert int(row["restored_member"]) == source
        assert row["restored_checksum"] == report[(generation - 1, source)]["saved_checksum"]
        restores.append((member, source))
    return restores


def test_search_on_a_two_node_cluster_is_synchronous_binary_tournament_pbt(cluster, lorenz, tmp_path):
    workdir = tmp_path / "search"
    with deadline(300):
        outcome = search(
            tiny_config(), lorenz, workdir, SearchSettings(**SETTINGS), address=cluster.address, cpus_per_member=1
        )
    assert outcome.generations == 3
    state = check_complete(workdir)
    members = read_csv(workdir / "ray" / "members.csv")
    assert len(members) == 12 and len({row["node_id"] for row in members}) > 1, "every trial ran on one node"
    assert {row["torch_threads"] for row in members} == {"1"}, (
        "each trial uses as many torch threads as CPUs it was given"
    )
    # Tune's own log of each trial's reports (it may miss a trial's last one: read every line there is)
    tune_results = {
        path.parent.name: [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for path in (workdir / "ray" / "search").glob("*/result.json")
    }
    assert len(tune_results) == 4 and all(tune_results.values())
    assert all(r["freed_memory_kept"] for results in tune_results.values() for r in results), (
        "every trial keeps freed memory for its next step, as the command line does"
    )

    # Synchronous: no member started a generation before every member had reported the one before.
    reports = read_reports(workdir)
    assert_synchronous(reports)
    # Every trial fits on the cluster at once: each waits at the barrier in its process, never started anew.
    assert processes_by_member(reports) == dict.fromkeys(range(4), 1), processes_by_member(reports)
    assert "4 trials of 1 CPU each; every trial has a place" in (workdir / "search.log").read_text()

    # Truncation: the worst member copies the best, its new values are the winner's perturbed.
    space = default_search_space()
    by_key = {(int(r["generation"]), int(r["member"])): r for r in state}
    exploits = read_csv(workdir / "exploits.csv")
    assert {int(e["generation"]) for e in exploits} == {0, 1}  # none after the last generation
    for generation in (0, 1):
        pairs = [e for e in exploits if int(e["generation"]) == generation]
        ranked = sorted(range(4), key=lambda m: (float(by_key[(generation, m)][ALL_METRIC]), m))
        assert [(int(e["loser"]), int(e["winner"])) for e in pairs] == [(ranked[-1], ranked[0])], pairs  # 4: one
        for e in pairs:
            loser, winner = by_key[(generation, int(e["loser"]))], by_key[(generation, int(e["winner"]))]
            assert float(e["loser_metric"]) == float(loser[ALL_METRIC]) and float(e["winner_metric"]) == float(
                winner[ALL_METRIC]
            )
            assert math.isnan(float(e["loser_metric"])) or float(e["loser_metric"]) >= float(e["winner_metric"])
            after = by_key[(generation + 1, int(e["loser"]))]
            for name, param in space.params.items():
                old, new = float(winner[name]), float(e[f"new_{name}"])
                assert float(after[name]) == new  # the next generation ran with the new values
                ratio = new / old
                low, high = 1 + 0.002 * param.explore_weight, 1 + param.explore_weight
                clipped = param.enforce_limits and new in (param.low, param.high)
                assert clipped or low * (1 - 1e-9) <= max(ratio, 1 / ratio) <= high * (1 + 1e-9), (name, old, new)
        losers = {int(e["loser"]) for e in pairs}
        for member in set(range(4)) - losers:  # the others keep their values
            assert all(by_key[(generation + 1, member)][n] == by_key[(generation, member)][n] for n in space.params)

    # Weights and optimizer state really copied: each restore equals the checkpoint it was taken from.
    assert_restores_follow_exploits(members, exploits)
    report = {(int(r["generation"]), int(r["member"])): r for r in members}
    winners = {(int(e["generation"]), int(e["loser"])): int(e["winner"]) for e in exploits}
    for generation, member in winners:  # and a loser's state differs from its own before
        assert report[(generation + 1, member)]["restored_checksum"] != report[(generation, member)]["saved_checksum"]

    metrics = read_csv(workdir / "metrics.csv")
    assert len(metrics) == 4 * (3 + 2 + 2)  # the first generation adds the 1-epoch ramp
    with h5py.File(workdir / "best_model" / "lfads_output.h5", "r") as out:
        expected = {f"{split}_{field}" for split in ("train", "valid") for field in OUTPUT_FIELDS}
        assert expected <= set(out.keys()), expected - set(out.keys())
        assert out["train_rates"].shape == (32, 20, 10)
    assert (workdir / "best_model" / "last.ckpt").is_file() and (workdir / "best_model" / "config.yaml").is_file()
    assert "search complete: 3 generations" in (workdir / "search.log").read_text()

    # The embedded backend, same settings: the same columns, hyperparameters and decisions; metrics equal up to
    # float rounding (one batched population vs one model per process).
    twin_dir = tmp_path / "embedded"
    search(tiny_config(), lorenz, twin_dir, SearchSettings(**{**SETTINGS, "backend": "embedded"}))
    twin = read_csv(twin_dir / "state.csv")
    assert list(twin[0]) == list(state[0]) and len(twin) == len(state)
    assert_same_state(state, twin, space)
    twin_exploits = read_csv(twin_dir / "exploits.csv")
    assert [(e["generation"], e["loser"], e["winner"]) for e in exploits] == [
        (e["generation"], e["loser"], e["winner"]) for e in twin_exploits
    ]
    assert (
        outcome.best_member
        == search(tiny_config(), lorenz, twin_dir, SearchSettings(**{**SETTINGS, "backend": "embedded"})).best_member
    )


def test_a_stitched_multi_session_search_runs_on_the_cluster(cluster, tmp_path):
    """Three session files of different neuron counts: one stitched model per member, an output per session,
    and the same decisions as the embedded backend."""
    data = tmp_path / "sessions"
    for index, neurons in enumerate((6, 9, 7)):
        write_synthetic(
            "lorenz",
            data / f"session_{index}.h5",
            n_conditions=6,
            trials_per_condition=4,
            seq_len=16,
            n_neurons=neurons,
            seed=2,
        )
    settings = {**SETTINGS, "population": 2, "epochs_per_generation": 1, "max_generations": 2}
    with deadline(240):
        outcome = search(
            tiny_config(),
            data,
            tmp_path / "ray",
            SearchSettings(**settings),
            address=cluster.address,
            cpus_per_member=1,
        )
    assert [p.name for p in outcome.outputs] == [f"lfads_output_session_{i}.h5" for i in range(3)]
    for path, neurons in zip(outcome.outputs, (6, 9, 7), strict=True):
        with h5py.File(path, "r") as out:
            assert out["valid_rates"].shape[1:] == (16, neurons)
    twin = search(tiny_config(), data, tmp_path / "embedded", SearchSettings(**{**settings, "backend": "embedded"}))
    exploits = [(e["generation"], e["loser"], e["winner"]) for e in read_csv(tmp_path / "ray" / "exploits.csv")]
    assert exploits == [
        (e["generation"], e["loser"], e["winner"]) for e in read_csv(tmp_path / "embedded" / "exploits.csv")
    ]
    assert outcome.best_member == twin.best_member


def test_members_per_trial_packs_members_on_one_axis_with_the_same_pbt(cluster, lorenz, tmp_path):
    """--members-per-trial 2: two trials of two members each (one population axis, one CPU per trial); an
    exploit across trials copies the winner's slice exactly; the same search as the embedded backend on two
    workers (the same slices)."""
    workdir = tmp_path / "packed"
    with deadline(300):
        outcome = search(
            tiny_config(),
            lorenz,
            workdir,
            SearchSettings(**SETTINGS),
            address=cluster.address,
            members_per_trial=2,
            cpus_per_trial=1,
        )
    state = check_complete(workdir)
    members = read_csv(workdir / "ray" / "members.csv")
    assert len(members) == 12
    trials = {row["trial_id"] for row in members}
    assert len(trials) == 2 and {
        frozenset(int(r["member"]) for r in members if r["trial_id"] == t) for t in trials
    } == {frozenset({0, 1}), frozenset({2, 3})}
    assert sorted(p.name.split("_")[1] for p in (workdir / "ray" / "search").glob("members_*")) == [
        "000-001",
        "002-003",
    ]
    exploits = read_csv(workdir / "exploits.csv")
    restores = assert_restores_follow_exploits(members, exploits)
    assert any(source // 2 != member // 2 for member, source in restores), (
        "no exploit crossed trials: the copy between trial checkpoints went untested"
    )
    assert "2 members per trial (2 trials)" in (workdir / "search.log").read_text()
    assert processes_by_member(read_reports(workdir)) == dict.fromkeys(range(4), 1)  # both trials live throughout
    assert (workdir / "best_model" / "lfads_output.h5").is_file()

    twin_dir = tmp_path / "embedded"
    twin = search(
        tiny_config(),
        lorenz,
        twin_dir,
        SearchSettings(**{**SETTINGS, "backend": "embedded"}),
        workers=2,
        threads_per_worker=1,
    )
    theirs = read_csv(twin_dir / "state.csv")
    space = default_search_space()
    assert len(theirs) == len(state)
    assert_same_state(state, theirs, space)
    assert [(e["generation"], e["loser"], e["winner"]) for e in exploits] == [
        (e["generation"], e["loser"], e["winner"]) for e in read_csv(twin_dir / "exploits.csv")
    ]
    assert outcome.best_member == twin.best_member


def test_a_population_larger_than_the_cluster_takes_turns_with_the_same_pbt(cluster, lorenz, tmp_path):
    """Two CPUs per member on a 4-CPU cluster: two of the four trials at a time. A trial waits at the barrier in
    its process only when no trial still to run this generation needs its CPUs, so the search neither
    deadlocks nor changes: the same decisions and state as the embedded backend."""
    workdir = tmp_path / "turns"
    with deadline(300):
        search(tiny_config(), lorenz, workdir, SearchSettings(**SETTINGS), address=cluster.address, cpus_per_member=2)
    state = check_complete(workdir)
    reports = read_reports(workdir)
    assert_synchronous(reports)
    assert {row["torch_threads"] for row in read_csv(workdir / "ray" / "members.csv")} == {"2"}
    assert max(processes_by_member(reports).values()) > 1, "no trial gave its CPUs up at the barrier"
    assert "4 trials of 2 CPU each; the trials do not all fit" in (workdir / "search.log").read_text()
    twin_dir = tmp_path / "embedded"
    search(tiny_config(), lorenz, twin_dir, SearchSettings(**{**SETTINGS, "backend": "embedded"}))
    assert_same_state(state, read_csv(twin_dir / "state.csv"), default_search_space())
    assert [(e["generation"], e["loser"], e["winner"]) for e in read_csv(workdir / "exploits.csv")] == [
        (e["generation"], e["loser"], e["winner"]) for e in read_csv(twin_dir / "exploits.csv")
    ]


GENERATIONS_TO_KILL_IN = 6


@pytest.mark.parametrize("members_per_trial", [1, 2])
def test_a_killed_driver_resumes_without_retraining_completed_work(cluster, lorenz, tmp_path, members_per_trial):
    """SIGKILL the driver in the middle of generation 1, once some member has finished it; rerun. With two
    members per trial, a trial's two members are kept or trained again together."""
    workdir = tmp_path / "search"
    options = {} if members_per_trial == 1 else {"members_per_trial": 2, "cpus_per_trial": 1}
    # generations to spare: the kill lands while the search runs, however late the poll sees generation 1
    command = driver(tmp_path, lorenz, workdir, cluster.address, generations=GENERATIONS_TO_KILL_IN, **options)
    env = {**os.environ, **CLUSTER_ENV}

    def finished_generation_1() -> bool:  # a member's generation-1 checkpoint is registered
        try:
            return any(row["generation"] == "1" for row in read_csv(workdir / "ray" / "members.csv"))
        except (FileNotFoundError, csv.Error, KeyError):
            return False

    first = start_driver(command, tmp_path / "driver-1.log")
    try:
        wait_for(finished_generation_1, 180, "a member to finish generation 1", first, tmp_path / "driver-1.log")
    finally:
        first.kill()  # SIGKILL: no cleanup at all
        first.wait(timeout=30)
    before = read_csv(workdir / "state.csv")
    done = {int(row["generation"]) for row in before}
    assert done == set(range(len(done))) and 1 <= len(done) < GENERATIONS_TO_KILL_IN, done  # killed mid-search
    state_at_kill = json.loads((workdir / "ray" / "pbt_state.json").read_text())
    in_progress = state_at_kill["record"]["generation"]
    reported = {int(m) for m, r in state_at_kill["reports"].items() if r["checkpoint"]}
    reports_before = (workdir / "ray" / "reports.jsonl").read_text()

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed the search" in second.stderr

    record = json.loads((workdir / "ray" / "pbt_state.json").read_text())["record"]
    assert record["finished"] and record["generation"] > len(done)  # the plateau rule may end it before the bound
    state = check_complete(workdir, record["generation"])
    assert state[: len(before)] == before  # completed generations: the same rows, never redone
    reports = [
        json.loads(line) for line in (workdir / "ray" / "reports.jsonl").read_text().splitlines() if line.strip()
    ]
    trained = Counter((r["generation"], r["member"]) for r in reports)
    kept = [(g, m) for g in done for m in range(4)] + [(in_progress, m) for m in reported]
    assert kept and all(trained[key] == 1 for key in kept), {key: trained[key] for key in kept}
    if members_per_trial == 2:
        assert all((m ^ 1) in reported for m in reported), reported  # members 0-1 and 2-3 report together
    assert (workdir / "ray" / "reports.jsonl").read_text().startswith(reports_before)
    assert (workdir / "best_model" / "lfads_output.h5").is_file()


def test_a_killed_worker_node_does_not_lose_members(own_cluster, lorenz, tmp_path):
    cluster = own_cluster
    workdir = tmp_path / "search"
    log = tmp_path / "driver.log"
    process = start_driver(driver(tmp_path, lorenz, workdir, cluster.address), log)
    try:
        wait_for(lambda: completed_generations(workdir) >= 1, 180, "the first generation", process, log)

        def trial_on_worker() -> bool:  # a member's actor is alive on the worker node: kill it mid-generation
            for pid in session_pids(cluster.worker):
                try:
                    if (
                        Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ImplicitFunc.train")
                    ):  # Tune's trial actor
                        return True
                except OSError:
                    pass
            return False

        wait_for(trial_on_worker, 60, "a trial on the worker node", process, log)
        cluster.kill_worker()
        killed_at = time.time()  # every process of the worker node is gone by now
        process.wait(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, log.read_text()
    check_complete(workdir)
    members = read_csv(workdir / "ray" / "members.csv")
    reports = [
        json.loads(line) for line in (workdir / "ray" / "reports.jsonl").read_text().splitlines() if line.strip()
    ]
    before = {r["node_id"] for r in reports if r["generation"] == 0}
    # Trials started after the kill ran on the surviving node only. (A report's "time" is when the driver took
    # it: a result the dead node sent just before the kill can arrive after it.)
    after = {r["node_id"] for r in reports if r["started_at"] > killed_at}
    assert len(before) == 2 and len(after) == 1 and after < before, (before, after)
    assert len(members) == 12
    errors = list((workdir / "ray" / "search").glob("*/error.txt"))
    assert errors, "no trial failed: the node was not killed while a member trained on it"


# ------------------------------------------------------------------------------------------------ deploy/ray
@pytest.mark.parametrize("name", ["cluster-local.yaml", "cluster-aws.yaml"])
def test_cluster_configs_match_the_schema_of_the_installed_ray(name):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "deploy" / "ray" / name).read_text())
    jsonschema.validate(config, schema)
    removed = {
        "autoscaling_mode",
        "initial_workers",
        "target_utilization_fraction",
        "min_workers",
        "max_workers_per_node",
        "head_node",
        "worker_nodes",
    }
    assert not removed & set(config), removed & set(config)
    provider = config["provider"]
    if name == "cluster-local.yaml":
        assert provider["type"] == "local" and provider["head_ip"] and provider["worker_ips"]
        assert config["auth"]["ssh_user"] and config["auth"].get("ssh_private_key")
    else:
        assert provider["type"] == "aws" and provider["region"]
        types = config["available_node_types"]
        assert config["head_node_type"] in types and len(types) >= 2
        for node in types.values():
            assert {"resources", "node_config", "min_workers", "max_workers"} <= set(node) or node is types[
                config["head_node_type"]
            ]
    commands = " ".join(config.get("setup_commands", []))
    assert "autolfads" in commands and "ray[tune]" in commands
    assert config["cluster_name"]
    # What `ray up` does first, offline: fill in the provider's defaults and validate again.
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(config)
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_the_readme_cluster_commands_with_a_token(lorenz, tmp_path):
    """As docs/ray.md says: generate a token, start the head, join a worker with RAY_AUTH_MODE=token, and search
    with --address HEAD:PORT without exporting anything (the command line turns token mode on, as Ray does for
    "auto"). HOME is a temporary folder, so the token is this test's own."""
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "RAY_AUTH_MODE"}
    env.update(HOME=str(home), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    port, temp_dir, sessions = free_port(), tempfile.mkdtemp(prefix="alt"), []

    def ray_cli(*args: str, **extra: str) -> None:
        process = subprocess.Popen(
            [RAY, *args],
            env={**env, **extra},
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        sessions.append(process.pid)
        output, _ = process.communicate(timeout=90)
        assert process.returncode == 0, output

    try:
        ray_cli("get-auth-token", "--generate")
        assert (home / ".ray" / "auth_token").is_file()
        ray_cli(
            "start",
            "--head",
            "--port",
            str(port),
            "--num-cpus",
            "0",
            "--node-ip-address",
            "127.0.0.1",
            "--include-dashboard=false",
            "--ray-client-server-port",
            str(free_port()),
            "--temp-dir",
            temp_dir,
        )
        ray_cli("start", "--address", f"127.0.0.1:{port}", "--num-cpus", "2", RAY_AUTH_MODE="token")
        overrides = [item for key, value in TINY.items() for item in (f"model.{key}", str(value))] + [
            "train.kl_increase_epoch",
            "1",
            "train.l2_increase_epoch",
            "1",
            "train.num_samples",
            "2",
        ]
        command = [
            sys.executable,
            "-m",
            "autolfads.cli",
            "search",
            "--backend",
            "ray",
            "--address",
            f"127.0.0.1:{port}",
            "--data",
            str(lorenz),
            "--population",
            "2",
            "--epochs-per-generation",
            "1",
            "--max-generations",
            "1",
            "--workdir",
            str(tmp_path / "search"),
            "--no-report",
            *overrides,
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        assert "RAY_AUTH_MODE=token" in result.stderr and result.stdout.count("search complete: 1 generations") == 1
    finally:
        for session in reversed(sessions):
            kill_session(session)
        shutil.rmtree(temp_dir, ignore_errors=True)
