"""`autolfads slurm`: the sbatch scripts, their signal handling run for real in bash, the checks made before a
script is written, and (marked `slurm`) jobs on a real single-host SLURM cluster.

The script tests need no SLURM: the scripts run in bash with stand-ins for `autolfads` and `scontrol` that
record what they were called with, and `sinfo` stand-ins print what a cluster would. The `slurm` tests need a
cluster: `make slurm-test` starts one on this machine (deploy/slurm/local_cluster.sh) and exports its
SLURM_CONF; without it they skip.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autolfads.cli import main
from autolfads.deploy.slurm import (
    SlurmNode,
    SlurmSettings,
    cluster_problems,
    gpu_count,
    parse_nodes,
    parse_partitions,
    sbatch_script,
    time_limit_seconds,
)
from autolfads.errors import ConfigError
from helpers import TINY_OVERRIDES, read_csv

BASH = shutil.which("bash")
SEARCH_ARGS = (("--workdir", "/shared/runs/a b"), ("--data", "/shared/lorenz.h5"), ("--population", "4"))


def settings(**changes) -> SlurmSettings:
    base = dict(name="lorenz", population=4, search_args=SEARCH_ARGS, bin_dir="/opt/env/bin", cpus=2)
    return SlurmSettings(**{**base, **changes})


def sbatch_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


# ------------------------------------------------------------------------------------------------ the scripts
def test_the_one_node_script_asks_for_a_requeueable_node_and_runs_the_same_search_on_every_start():
    script = sbatch_script(settings(time_limit="1-12", memory="16G", partition="cpu", account="lab"))
    assert sbatch_lines(script) == [
        "#SBATCH --job-name=lorenz",
        "#SBATCH --partition=cpu",
        "#SBATCH --account=lab",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=16G",
        "#SBATCH --time=1-12",
        "#SBATCH --output=%x-%j.out",
        "#SBATCH --open-mode=append",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@300",
    ]
    assert "    --workdir '/shared/runs/a b'\n    --data /shared/lorenz.h5\n    --population 4\n" in script
    assert "trap on_time_limit USR1" in script and 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert 'export CUDA_VISIBLE_DEVICES=""' in script and "export PATH=/opt/env/bin:$PATH" in script
    assert subprocess.run([BASH, "-n"], input=script, text=True).returncode == 0


def test_whole_nodes_gpus_and_setup_lines():
    script = sbatch_script(settings(cpus=None, gpus=2, setup=("module load cuda/12.4",), signal_lead_s=600))
    lines = sbatch_lines(script)
    assert "#SBATCH --exclusive" in lines and "#SBATCH --gres=gpu:2" in lines
    assert "#SBATCH --signal=B:USR1@600" in lines and not any("cpus-per-task" in line for line in lines)
    assert "CUDA_VISIBLE_DEVICES" not in script  # SLURM sets it to the job's GPUs
    assert script.index("module load cuda/12.4") < script.index("search=(")


def test_the_ray_script_starts_the_head_then_a_worker_per_node_by_srun_and_stops_ray_at_exit():
    script = sbatch_script(settings(backend="ray", nodes=3, cpus=8, gpus=1, trial_cpus=2, trial_gpus=0.5))
    assert "#SBATCH --nodes=3" in sbatch_lines(script)
    head = script.index("ray start --head --block")
    workers = script.index('srun --nodes="$SLURM_JOB_NUM_NODES"')
    assert head < script.index("autolfads slurm ray-wait") < workers < script.index("search=(")
    assert "--num-cpus 0 --num-gpus 0" in script[head:workers]  # the head trains nothing
    assert "export RAY_AUTH_MODE=token" in script and "trap stop_ray EXIT" in script
    assert '    --backend ray\n    --address "$address"\n)' in script
    assert "port=$((20000 + SLURM_JOB_ID % 2500 * 4))" in script
    assert "port=6500" in sbatch_script(settings(backend="ray", ray_port=6500))
    assert subprocess.run([BASH, "-n"], input=script, text=True).returncode == 0


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(nodes=2), "--nodes 2 needs --backend ray"),
        (dict(name="my job"), "--name 'my job'"),
        (dict(time_limit="90min"), "--time '90min': expected minutes"),
        (dict(time_limit="4", signal_lead_s=300), "--signal-lead 300 s must be shorter than the time limit --time 4"),
        (dict(memory="16GB"), "--mem '16GB'"),
        (dict(gpus=4, cpus=2), "--cpus 2: give each of the 4 GPU workers a CPU"),
        (dict(backend="ray", trial_cpus=4), "a Ray trial's 4 CPUs must fit in a node's --cpus 2"),
        (dict(backend="ray", trial_gpus=1), "a Ray trial's 1 GPUs must fit in a node's --gpus 0"),
        (dict(setup=("a\nb",)), "--setup 'a\\nb': expected one non-empty shell line"),
    ],
)
def test_bad_settings_name_the_option(changes, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings(**changes)


@pytest.mark.parametrize(
    "text, seconds",
    [("90", 5400), ("5:30", 330), ("1:00:00", 3600), ("2-0", 172800), ("1-2:30", 95400), ("0-0:1:5", 65), ("1h", None)],
)
def test_time_limits_in_sbatch_forms(text, seconds):
    assert time_limit_seconds(text) == seconds


# ------------------------------------------------------------------------------------------------ run in bash
FAKE_AUTOLFADS = """#!/bin/bash
echo "$@" > "$FAKE_DIR/args"
trap 'echo TERM > "$FAKE_DIR/signal"; kill "$sleeper"; exit 143' TERM
[ -n "${FAKE_EXIT:-}" ] && exit "$FAKE_EXIT"
sleep 60 &
sleeper=$!
echo $$ > "$FAKE_DIR/pid"
wait "$sleeper"
"""
FAKE_SCONTROL = '#!/bin/bash\necho "$@" >> "$FAKE_DIR/scontrol"\n'


@pytest.fixture
def fake_bin(tmp_path) -> Path:
    """A folder with stand-ins for autolfads (records its arguments, then waits) and scontrol."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, text in (("autolfads", FAKE_AUTOLFADS), ("scontrol", FAKE_SCONTROL)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def start_script(fake_bin: Path, cpus: int, population: int = 4, **env) -> subprocess.Popen:
    script = fake_bin.parent / "job.sbatch"
    script.write_text(sbatch_script(settings(bin_dir=str(fake_bin), population=population)))
    environment = {
        **os.environ,
        "FAKE_DIR": str(fake_bin.parent),
        "SLURM_JOB_ID": "7",
        "SLURM_CPUS_PER_TASK": str(cpus),
        **env,
    }
    return subprocess.Popen([BASH, str(script)], env=environment, stdout=subprocess.PIPE, text=True)


def wait_for(path: Path, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.05)
    return path.read_text()


@pytest.mark.parametrize("cpus, population, workers, threads", [(2, 4, 2, 1), (8, 4, 4, 2), (3, 8, 3, 1)])
def test_the_script_runs_a_worker_per_cpu_with_the_cpus_shared(fake_bin, cpus, population, workers, threads):
    job = start_script(fake_bin, cpus, population, FAKE_EXIT="0")
    output, _ = job.communicate(timeout=30)
    assert job.returncode == 0, output
    args = (fake_bin.parent / "args").read_text().split()
    assert args[:2] == ["search", "--workdir"]
    assert args[-4:] == ["--workers", str(workers), "--threads-per-worker", str(threads)]
    assert "start 1" in output and "the search is complete" in output


def test_usr1_before_the_time_limit_stops_the_search_and_requeues_the_job(fake_bin):
    job = start_script(fake_bin, cpus=2)
    wait_for(fake_bin.parent / "pid")
    job.send_signal(signal.SIGUSR1)  # as --signal=B:USR1@LEAD does
    output, _ = job.communicate(timeout=30)
    assert job.returncode == 0, output
    assert wait_for(fake_bin.parent / "signal") == "TERM\n"
    assert (fake_bin.parent / "scontrol").read_text() == "requeue 7\n"
    assert "the time limit is near" in output and "the search is complete" not in output


def test_term_from_slurm_stops_the_search_without_requeueing_it_again(fake_bin):
    job = start_script(fake_bin, cpus=2, SLURM_RESTART_COUNT="2")
    wait_for(fake_bin.parent / "pid")
    job.send_signal(signal.SIGTERM)
    output, _ = job.communicate(timeout=30)
    assert job.returncode == 143
    assert wait_for(fake_bin.parent / "signal") == "TERM\n" and not (fake_bin.parent / "scontrol").exists()
    assert "start 3" in output and "stopped by SLURM" in output


def test_a_failed_search_fails_the_job(fake_bin):
    job = start_script(fake_bin, cpus=2, FAKE_EXIT="2")
    output, _ = job.communicate(timeout=30)
    assert job.returncode == 2 and "the search is complete" not in output


# ------------------------------------------------------------------------------------------------ the cluster
SINFO_NODES = "a01|32|(null)\na02|32|(null)\ng01|16|gpu:a100:2(S:0-1)\ng01|16|gpu:a100:2(S:0-1)\ng02|16|gpu:2,mps:200\n"


def test_sinfo_is_parsed_into_nodes_and_partitions():
    assert parse_nodes(SINFO_NODES) == [
        SlurmNode("a01", 32, 0),
        SlurmNode("a02", 32, 0),
        SlurmNode("g01", 16, 2),
        SlurmNode("g02", 16, 2),
    ]
    assert parse_partitions("cpu*\ngpu\n") == (["cpu", "gpu"], "cpu")
    assert [gpu_count(g) for g in ("(null)", "gpu:4", "gpu:v100:1(S:0),gpu:a100:2(S:1)", "gpu", "mps:100")] == [
        0,
        4,
        3,
        1,
        0,
    ]


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(partition="big"), "--partition big: no such partition on this cluster (sinfo lists cpu, gpu)"),
        (dict(partition="gpu", gpus=4, cpus=4), "--gpus 4: the nodes of partition gpu have at most 2 GPUs each"),
        (dict(cpus=64), "--cpus 64: the nodes of partition cpu have at most 32 CPUs each"),
        (dict(backend="ray", nodes=3), "--nodes 3: partition cpu has 2 node(s) with 2 CPUs and 0 GPUs"),
        (dict(partition="gpu", gpus=2, cpus=16), None),
    ],
)
def test_a_request_is_checked_against_the_partition(changes, message):
    nodes = {"cpu": parse_nodes(SINFO_NODES)[:2], "gpu": parse_nodes(SINFO_NODES)[2:]}
    request = settings(**changes)
    problems = cluster_problems(request, ["cpu", "gpu"], "cpu", nodes.get(request.partition or "cpu", []))
    assert problems == ([message] if message else [])


FAKE_SINFO = """#!/bin/bash
case "$*" in
*"-N -p cpu"*) printf 'a01|32|(null)\\n' ;;
*"-N -p gpu"*) printf 'g01|16|gpu:2\\n' ;;
*-N*) ;;
*) printf 'cpu*\\ngpu\\n' ;;
esac
"""


@pytest.fixture
def lorenz(tmp_path_factory) -> Path:
    from helpers import tiny_search_data

    return tiny_search_data(tmp_path_factory.mktemp("data") / "lorenz.h5")


def slurm_search(lorenz: Path, tmp_path: Path, *args: str) -> list[str]:
    return ["slurm", "search", "--data", str(lorenz), "--workdir", str(tmp_path / "run"), *args]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cpus", "2", "--partition", "big"], "--partition big: no such partition on this cluster"),
        (["--cpus", "4", "--partition", "gpu", "--gpus", "4"], "--gpus 4: the nodes of partition gpu have at most 2"),
        (["--cpus", "2", "--nodes", "2"], "--nodes 2 needs --backend ray"),
        (["--cpus", "2", "--cpus-per-member", "2"], "--cpus-per-member needs --backend ray"),
        (["--cpus", "2", "--gpus", "1", "train.device", "cpu"], "--gpus 1 with train.device cpu"),
        (["--cpus", "2", "train.device", "cuda"], "train.device cuda needs GPUs"),
        (["--cpus", "2", "model.gen_dimm", "8"], "model.gen_dimm"),
        (["--cpus", "2", "--time", "soon"], "--time 'soon'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(lorenz, tmp_path, capsys, monkeypatch, args, message):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sinfo").write_text(FAKE_SINFO)
    (bin_dir / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    script = tmp_path / "job.sbatch"
    assert main(slurm_search(lorenz, tmp_path, *args, "-o", str(script))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autolfads: error: ") and message in err and "\n" not in err
    assert not script.exists()


def test_submit_without_slurm_is_one_line(lorenz, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no sinfo
    script = tmp_path / "job.sbatch"
    assert main(slurm_search(lorenz, tmp_path, "--cpus", "2", "-o", str(script), "--submit")) == 2
    err = capsys.readouterr().err
    assert "--submit: no SLURM on this machine (sbatch is not on PATH)" in err and not script.exists()


FAILING_SINFO = """#!/bin/bash
echo "sinfo: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host" >&2
echo "sinfo: fatal: Could not establish a configuration source" >&2
exit 1
"""


@pytest.mark.parametrize("submit", [False, True])
def test_a_cluster_that_does_not_answer_is_a_note_or_with_submit_an_error(
    lorenz, tmp_path, capsys, monkeypatch, submit
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sinfo", "sbatch"):
        (bin_dir / name).write_text(FAILING_SINFO)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    script = tmp_path / "job.sbatch"
    status = main(slurm_search(lorenz, tmp_path, "--cpus", "2", "-o", str(script), *(["--submit"] if submit else [])))
    err = capsys.readouterr().err
    reason = "sinfo failed: sinfo: fatal: Could not establish a configuration source"
    if submit:
        assert status == 2 and f"autolfads: error: {reason}" in err and not script.exists()
    else:
        assert status == 0 and f"autolfads: note: {reason}: the partition" in err and script.exists()


def test_a_missing_data_file_is_refused(tmp_path, capsys):
    assert main(slurm_search(tmp_path / "nothing.h5", tmp_path, "--cpus", "2")) == 2
    assert "nothing.h5: no such file or folder" in capsys.readouterr().err


def test_the_written_script_runs_this_environment_s_autolfads_with_absolute_paths(lorenz, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no SLURM: nothing to check against
    monkeypatch.chdir(tmp_path)
    args = ["--cpus", "4", "--population", "6", "--max-generations", "3", *TINY_OVERRIDES[:4], "-o", "job.sbatch"]
    shutil.copy(lorenz, tmp_path / lorenz.name)
    assert main(["slurm", "search", "--data", lorenz.name, "--workdir", "run", *args]) == 0
    script = (tmp_path / "job.sbatch").read_text()
    assert f"export PATH={Path(sys.executable).parent}:$PATH" in script
    assert f"    --workdir {tmp_path / 'run'}\n    --data {tmp_path / lorenz.name}\n    --population 6\n" in script
    assert f"    {TINY_OVERRIDES[0]} {TINY_OVERRIDES[1]}\n    {TINY_OVERRIDES[2]} {TINY_OVERRIDES[3]}\n" in script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_wait_says_when_no_head_answers(capsys):
    assert main(["slurm", "ray-wait", f"127.0.0.1:{free_port()}", "--nodes", "1", "--timeout", "1"]) == 2
    assert "no Ray head answers at 127.0.0.1:" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ real jobs
AUTOLFADS = str(Path(sys.executable).parent / "autolfads")
SEARCH = ["--epochs-per-generation", "2", "--no-report", *TINY_OVERRIDES, "train.num_samples", "2"]


@pytest.fixture(scope="module")
def cluster() -> str:
    """The cluster of SLURM_CONF (make slurm-test starts one on this machine); skips without one."""
    conf = os.environ.get("SLURM_CONF")
    if not conf or shutil.which("sinfo") is None:
        pytest.skip("no SLURM cluster: `make slurm-test` starts one on this machine (as root) and runs these tests")
    states = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=60)
    assert states.returncode == 0 and states.stdout.split(), (
        f"sinfo cannot reach the cluster of {conf}: {states.stderr}"
    )
    return conf


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{command[:3]}: {result.stderr}"
    return result


def tiny_lorenz(folder: Path) -> Path:
    """The CLI's Lorenz set, small: 40 trials of 20 bins and 10 neurons."""
    data = folder / "lorenz.h5"
    run(
        [AUTOLFADS, "data", "lorenz", "--out", data, "--n-conditions", "8", "--trials-per-condition", "5"]
        + ["--seq-len", "20", "--n-neurons", "10"]
    )
    return data


ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


class Job:
    """A submitted job, watched with scontrol (no accounting here); cancelled if a test leaves it behind."""

    def __init__(self, submitted: str, folder: Path, name: str) -> None:
        self.id = re.search(r"submitted batch job (\d+)", submitted)[1]
        self.log = folder / f"{name}-{self.id}.out"

    def fields(self) -> dict:
        shown = run(["scontrol", "show", "job", "-o", self.id]).stdout
        return dict(item.split("=", 1) for item in shown.split() if "=" in item)

    def wait(self, done, what: str, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            ended = self.fields()["JobState"] in ENDED
            if (ended and not done()) or time.monotonic() > deadline:
                log = self.log.read_text() if self.log.exists() else "(no log)"
                pytest.fail(
                    f"job {self.id}: {what} did not happen ({self.fields()['JobState']}); its log:\n{log[-4000:]}"
                )
            time.sleep(0.2)

    def state(self) -> tuple[str, int]:
        fields = self.fields()
        return fields["JobState"], int(fields["Restarts"])

    def release(self, restarts: int) -> None:
        """After a requeue SLURM holds the job about 2 minutes (its EligibleTime): let it start now, once its
        last run has ended (the node's CPUs are free) and a second has passed: slurmd refuses to start a job
        in the same second as it revoked the job's last credential (the job then fails)."""
        self.wait(lambda: self.state() == ("PENDING", restarts), f"requeue number {restarts}")
        self.wait(lambda: " CPUAlloc=0 " in run(["scontrol", "show", "node", "-o"]).stdout, "the end of the last run")
        time.sleep(2)
        run(["scontrol", "update", f"jobid={self.id}", "StartTime=now"])

    def cancel(self) -> None:
        subprocess.run(["scancel", self.id], capture_output=True, timeout=60)


def rows(table: Path) -> int:
    return len(read_csv(table)) if table.exists() else 0


@pytest.mark.slurm
@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--cpus", "1", "--partition", "nope"],
            "--partition nope: no such partition on this cluster (sinfo lists debug)",
        ),
        (["--cpus", "1", "--gpus", "1"], "--gpus 1: the nodes of partition debug have at most 0 GPUs each"),
        (
            ["--cpus", str(os.cpu_count() + 1)],
            f"--cpus {os.cpu_count() + 1}: the nodes of partition debug have at most",
        ),
    ],
)
def test_the_cluster_s_partition_and_nodes_are_checked(cluster, tmp_path, args, message):
    """sinfo's own answers (the test cluster: one partition, debug, of one node with this machine's CPUs)."""
    data = tmp_path / "lorenz.h5"
    data.touch()
    slurm = [AUTOLFADS, "slurm", "search", "--data", data, "--workdir", tmp_path / "run", *args, "-o", tmp_path / "s"]
    result = subprocess.run([str(part) for part in slurm], capture_output=True, text=True, timeout=120)
    err = result.stderr.strip()
    assert result.returncode == 2 and err.startswith(f"autolfads: error: {message}") and "\n" not in err
    assert not (tmp_path / "s").exists()


@pytest.mark.slurm
@pytest.mark.slow
def test_a_twice_requeued_search_ends_with_the_tables_of_an_uninterrupted_one(cluster, tmp_path):
    """Requeued by `scontrol requeue` (SLURM's TERM, as in a preemption) after the first generation, and by its
    own USR1 handler (as before the time limit) after the next: the job's three starts run the same command,
    and the tables equal those of one uninterrupted run with one worker (the job has two)."""
    data, population = tiny_lorenz(tmp_path), 4
    search = ["--data", data, "--population", population, "--max-generations", "10", *SEARCH]
    run([AUTOLFADS, "search", "--workdir", tmp_path / "reference", "--workers", "1", *search])
    slurm = [AUTOLFADS, "slurm", "search", "--workdir", tmp_path / "job", "--cpus", "2", "--name", "requeued"]
    job = Job(
        run([*slurm, "-o", tmp_path / "job.sbatch", "--submit", *search], cwd=tmp_path).stdout, tmp_path, "requeued"
    )
    state = tmp_path / "job" / "state.csv"
    try:
        job.wait(lambda: rows(state) >= population, "the first generation")
        run(["scontrol", "requeue", job.id])
        job.release(restarts=1)
        done = rows(state)
        job.wait(lambda: rows(state) >= done + population, "a generation after the first requeue")
        run(["scancel", "--signal=USR1", "--batch", job.id])  # what --signal=B:USR1@LEAD sends
        job.release(restarts=2)
        assert rows(state) < rows(tmp_path / "reference" / "state.csv"), "the second requeue came after the end"
        job.wait(lambda: job.state()[0] == "COMPLETED", "the end of the search")
    finally:
        job.cancel()
    for table in ("state.csv", "exploits.csv"):
        assert (tmp_path / "job" / table).read_text() == (tmp_path / "reference" / table).read_text(), table
    log = job.log.read_text()
    assert "stopped by SLURM" in log and "the time limit is near" in log
    assert "start 3" in log and log.count("the search is complete") == 1
    assert (tmp_path / "job" / "search.log").read_text().count("resumed the search") == 2
    assert job.fields()["ExitCode"] == "0:0"


@pytest.mark.slurm
@pytest.mark.slow
def test_a_ray_search_on_the_job_s_node_and_ray_stopped_after_it(cluster, tmp_path):
    """--backend ray on one node: the head (no CPUs) and the node's worker (srun) on the same host."""
    data, population, generations = tiny_lorenz(tmp_path), 2, 2
    search = ["--data", data, "--population", population, "--max-generations", generations, *SEARCH]
    slurm = [AUTOLFADS, "slurm", "search", "--workdir", tmp_path / "job", "--cpus", "2", "--name", "ray"]
    ray = ["--backend", "ray", "--cpus-per-member", "1"]
    job = Job(
        run([*slurm, *ray, "-o", tmp_path / "job.sbatch", "--submit", *search], cwd=tmp_path).stdout, tmp_path, "ray"
    )
    try:
        job.wait(lambda: job.state()[0] == "COMPLETED", "the end of the search")
    finally:
        job.cancel()
    workdir = tmp_path / "job"
    state = read_csv(workdir / "state.csv")
    assert [(int(r["generation"]), int(r["member"])) for r in state] == [
        (g, m) for g in range(generations) for m in range(population)
    ]
    assert [int(r["generation"]) for r in read_csv(workdir / "exploits.csv")] == [0]  # one pair, after generation 0
    assert len(read_csv(workdir / "ray" / "members.csv")) >= population
    log = job.log.read_text()
    assert "Ray head at 127.0.0.1:" in log and "the search is complete" in log and "Ray stopped" in log
    ray_dir = Path(f"/tmp/ray-{job.id}")  # the job's Ray logs, kept for the user; removed here, after the check
    left = [cmd for cmd in Path("/proc").glob("[0-9]*/cmdline") if str(ray_dir).encode() in read_bytes(cmd)]
    shutil.rmtree(ray_dir, ignore_errors=True)
    assert not left, "Ray processes of the job outlived it"


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""
