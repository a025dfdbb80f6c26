"""sbatch scripts that run an AutoLFADS search on a SLURM cluster, and the checks made before one is written.

Two kinds of job, both requeue-safe: the search checkpoints every completed generation atomically and
rerunning the same `autolfads search` command in the same workdir continues from there, so the script runs
that one command on every start of the job (first run, requeue, preemption) and a requeued job ends with
the same tables as an uninterrupted one.

* embedded (one node): `autolfads search` with worker processes on the job's CPUs, or on its GPUs.
* ray (one node or more): Ray started on the job's nodes (the head, which schedules and runs the search
  driver, on the first node; one Ray worker per node, the first included, started by `srun` with the
  node's CPUs and GPUs), then `autolfads search --backend ray --address HEAD:PORT`; Ray is stopped when
  the script exits.

`#SBATCH --signal=B:USR1@LEAD` has SLURM signal the batch shell LEAD seconds before the time limit: the
script stops the search and requeues the job (`scontrol requeue`). On SIGTERM (preemption, `scontrol
requeue`, scancel) it stops the search and Ray and exits; SLURM requeues a preempted job itself.

Building a script is pure (settings in, text out); the thin I/O helpers at the end run `sinfo` and
`sbatch`, and wait for a Ray cluster's nodes.
"""

import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import ConfigError

BACKENDS = ("embedded", "ray")
# A job name that is safe in an #SBATCH line and a file name (the log is NAME-JOBID.out).
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MEMORY = re.compile(r"^[1-9][0-9]*[KMGT]?$")  # sbatch --mem: megabytes, or a K/M/G/T suffix
# sbatch --time: M, M:S, H:M:S, D-H, D-H:M or D-H:M:S
TIME_LIMIT = re.compile(
    r"^(?:(?P<days>\d+)-(?P<hours>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$"
)
# Ray's ports on a node: GCS (base), client server (base+1), the head's and the workers' dashboard agents
# (base+2, base+3; a head and a worker share the first node). From the job id, so that two jobs sharing a
# node differ, in 20000-29999: below Linux's ephemeral ports and above Ray's default worker ports.
RAY_PORT_BASE, RAY_PORT_SLOTS = 20000, 2500
LOG_PREFIX = "[autolfads-slurm]"


@dataclass(frozen=True)
class SlurmSettings:
    name: str
    population: int
    search_args: tuple[tuple[str, ...], ...]  # `autolfads search`'s arguments, an option (and value) each
    bin_dir: str  # the folder holding the autolfads (and ray) executables the job runs
    backend: str = "embedded"
    nodes: int = 1
    cpus: int | None = None  # per node; None: whole nodes (--exclusive), as many CPUs as each has
    gpus: int = 0  # per node
    memory: str | None = None  # per node
    time_limit: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    signal_lead_s: int = 300
    setup: tuple[str, ...] = ()  # shell lines run before anything else (module load ..., source venv/bin/activate)
    trial_cpus: float = 1.0  # ray: what one Ray trial asks for
    trial_gpus: float = 0.0
    ray_port: int | None = None  # ray: the head's GCS port (None: from the job id)

    def __post_init__(self) -> None:
        problems = self._job_problems() + self._resource_problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def _job_problems(self) -> list[str]:
        problems = []
        if not JOB_NAME.match(self.name):
            problems.append(
                f"--name {self.name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit"
            )
        if self.backend not in BACKENDS:
            problems.append(f"--backend {self.backend!r}: expected one of {', '.join(BACKENDS)}")
        if self.time_limit is not None:
            limit = time_limit_seconds(self.time_limit)
            if limit is None:
                problems.append(
                    f"--time {self.time_limit!r}: expected minutes, M:S, H:M:S, D-H, D-H:M or D-H:M:S (sbatch's forms)"
                )
            elif limit <= self.signal_lead_s:
                problems.append(
                    f"--signal-lead {self.signal_lead_s} s must be shorter than the time limit "
                    f"--time {self.time_limit} ({limit} s)"
                )
        if self.signal_lead_s < 1:
            problems.append(f"--signal-lead must be >= 1 second, got {self.signal_lead_s}")
        if self.memory is not None and not MEMORY.match(self.memory):
            problems.append(f"--mem {self.memory!r}: expected megabytes or a number with K, M, G or T, e.g. 16G")
        for line in self.setup:
            if "\n" in line or not line.strip():
                problems.append(f"--setup {line!r}: expected one non-empty shell line")
        if self.ray_port is not None and not 1024 <= self.ray_port <= 65532:
            problems.append(
                f"--ray-port must be between 1024 and 65532 (it uses 4 ports from there), got {self.ray_port}"
            )
        return problems

    def _resource_problems(self) -> list[str]:
        problems = []
        if self.nodes < 1:
            problems.append(f"--nodes must be >= 1, got {self.nodes}")
        if self.backend == "embedded" and self.nodes > 1:
            problems.append(f"--nodes {self.nodes} needs --backend ray: the embedded backend runs on one node")
        if self.cpus is not None and self.cpus < 1:
            problems.append(f"--cpus must be >= 1, got {self.cpus}")
        if self.gpus < 0:
            problems.append(f"--gpus must be >= 0, got {self.gpus}")
        if self.backend == "embedded" and self.cpus is not None and self.cpus < self.gpu_workers:
            problems.append(f"--cpus {self.cpus}: give each of the {self.gpu_workers} GPU workers a CPU at least")
        if self.backend == "ray" and self.cpus is not None and self.trial_cpus > self.cpus:
            problems.append(f"a Ray trial's {self.trial_cpus:g} CPUs must fit in a node's --cpus {self.cpus}")
        if self.backend == "ray" and self.trial_gpus > self.gpus:
            problems.append(f"a Ray trial's {self.trial_gpus:g} GPUs must fit in a node's --gpus {self.gpus}")
        return problems

    @property
    def gpu_workers(self) -> int:
        """Embedded on GPUs: one worker per GPU (the search's default), at most the population."""
        return min(self.gpus, self.population)


def time_limit_seconds(text: str) -> int | None:
    """sbatch's --time in seconds (None: not one of its forms)."""
    match = TIME_LIMIT.match(text)
    if match is None:
        return None
    if match["days"] is not None:
        parts = (match["days"], match["hours"], match["dm"] or "0", match["ds"] or "0")
        days, hours, minutes, seconds = map(int, parts)
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    a, b, c = match["a"], match["b"], match["c"]
    if c is not None:  # H:M:S
        return (int(a) * 60 + int(b)) * 60 + int(c)
    return int(a) * 60 + int(b or 0)  # M or M:S


# ------------------------------------------------------------------------------------------------ the script
def sbatch_script(settings: SlurmSettings) -> str:
    """The whole sbatch script of `settings`."""
    body = _embedded_lines(settings) if settings.backend == "embedded" else _ray_lines(settings)
    parts = [_header_lines(settings), _environment_lines(settings), SIGNAL_HANDLING.splitlines(), body, RUN_SEARCH]
    return "\n".join(line for part in parts for line in part) + "\n"


def _header_lines(settings: SlurmSettings) -> list[str]:
    what = "one node, embedded backend" if settings.backend == "embedded" else f"{settings.nodes} node(s), Ray"
    options = {
        "job-name": settings.name,
        "partition": settings.partition,
        "account": settings.account,
        "qos": settings.qos,
        "nodes": str(settings.nodes),
        "ntasks-per-node": "1",
        "cpus-per-task": None if settings.cpus is None else str(settings.cpus),
        "gres": f"gpu:{settings.gpus}" if settings.gpus else None,
        "mem": settings.memory,
        "time": settings.time_limit,
        "output": "%x-%j.out",  # in the folder sbatch ran in; a requeued start appends to it
        "open-mode": "append",
        "requeue": "",
        "signal": f"B:USR1@{settings.signal_lead_s}",
    }
    lines = [
        "#!/bin/bash",
        f"# An AutoLFADS search on SLURM ({what}), written by `autolfads slurm search` (autolfads {__version__}).",
        "# Submit it with: sbatch THIS_FILE. Every start of the job (the first, a requeue, a preemption) runs the",
        "# same search command in the same workdir, which continues from the last completed generation.",
    ]
    lines += [
        f"#SBATCH --{key}" + (f"={value}" if value else "") for key, value in options.items() if value is not None
    ]
    if settings.cpus is None:
        lines.append("#SBATCH --exclusive")
    return [*lines, "set -euo pipefail", ""]


def _environment_lines(settings: SlurmSettings) -> list[str]:
    lines = [
        "# the environment autolfads ran in when this script was written",
        f"export PATH={shlex.quote(settings.bin_dir)}:$PATH",
        *settings.setup,
        "export PYTHONUNBUFFERED=1",
    ]
    if settings.gpus == 0:
        lines.append('export CUDA_VISIBLE_DEVICES=""  # no GPU was asked for: train on the CPUs even where GPUs are')
    return [
        *lines,
        f'log() {{ echo "{LOG_PREFIX} $(date +%H:%M:%S) $*"; }}',
        'log "job $SLURM_JOB_ID on $(hostname), start $((${SLURM_RESTART_COUNT:-0} + 1))"',
        "cpus=${SLURM_CPUS_PER_TASK:-$SLURM_CPUS_ON_NODE}  # per node",
        "",
    ]


SIGNAL_HANDLING = """\
search_pid=""
stop_search() {  # the search is kill-safe: its checkpoint after each generation is written atomically
    trap '' USR1 TERM
    if [ -n "$search_pid" ]; then
        kill -TERM "$search_pid" 2>/dev/null || true
        wait "$search_pid" || true
    fi
}
# --signal=B:USR1@LEAD: the time limit is LEAD seconds away. Stop, and queue the job again.
on_time_limit() {
    log "the time limit is near: stopping the search and requeueing job $SLURM_JOB_ID"
    stop_search
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
}
# Preemption, `scontrol requeue` or scancel: SLURM sends TERM to every process of the job (KILL later).
on_term() {
    log "stopped by SLURM (preempted, requeued or cancelled); a requeued job resumes from the last completed generation"
    stop_search
    exit 143
}
trap on_time_limit USR1
trap on_term TERM
"""


def _embedded_lines(settings: SlurmSettings) -> list[str]:
    """Workers on the job's CPUs (one per CPU, at most the population, threads = the CPUs' share), or one per
    GPU (SLURM's CUDA_VISIBLE_DEVICES: the job's GPUs) with the CPUs shared among them."""
    if settings.gpus:
        workers = settings.gpu_workers
        lines = [
            f"# one worker per GPU ({workers}), the CPUs shared among them",
            f"threads=$((cpus >= {workers} ? cpus / {workers} : 1))",
        ]
        backend = ['--threads-per-worker "$threads"']
    else:
        population = settings.population
        lines = [
            "# one worker per CPU, at most the population; their torch threads share the CPUs",
            f"workers=$((cpus < {population} ? cpus : {population}))",
            "threads=$((cpus / workers))",
        ]
        backend = ['--workers "$workers"', '--threads-per-worker "$threads"']
    return [*lines, *_search_command(settings, backend)]


def _ray_lines(settings: SlurmSettings) -> list[str]:
    """Ray on the job's nodes with this job's own token, stopped when the script exits."""
    port = (
        str(settings.ray_port) if settings.ray_port else f"$(({RAY_PORT_BASE} + SLURM_JOB_ID % {RAY_PORT_SLOTS} * 4))"
    )
    lines = [
        f"port={port}",
        *RAY_CLUSTER.splitlines(),
    ]
    backend = ["--backend ray", '--address "$address"']
    return [*lines, *_search_command(settings, backend)]


RAY_CLUSTER = """\
# This job's own Ray token, in its processes' environment only: other users' processes cannot join.
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \\n')
export RAY_AUTH_TOKEN
# The head runs on this, the first node, at the address SLURM reaches the node by (its NodeAddr).
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
node_addr=$(scontrol show node "$head_node" | sed -n 's/.*NodeAddr=\\([^ ]*\\).*/\\1/p')
head_ip=$(getent ahostsv4 "$node_addr" | awk 'NR == 1 {print $1}')
address=$head_ip:$port
ray_dir=/tmp/ray-$SLURM_JOB_ID  # Ray's logs on every node
gpus=${SLURM_GPUS_ON_NODE:-0}
ray_pids=()
stop_ray() {
    local pid
    for pid in "${ray_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${ray_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    log "Ray stopped"
}
trap stop_ray EXIT
log "Ray head at $address ($head_node), $SLURM_JOB_NUM_NODES node(s) of $cpus CPUs and $gpus GPUs"
# The head schedules and runs the search driver; it trains no members (0 CPUs for Ray).
ray start --head --block --node-ip-address "$head_ip" --port "$port" --ray-client-server-port $((port + 1)) \\
    --dashboard-agent-listen-port $((port + 2)) --include-dashboard=false --num-cpus 0 --num-gpus 0 \\
    --temp-dir "$ray_dir" &
ray_pids+=($!)
autolfads slurm ray-wait "$address" --nodes 1
# One Ray worker per node, this one included, with the node's CPUs and GPUs.
srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 --cpus-per-task="$cpus" \\
    ray start --block --address "$address" --num-cpus "$cpus" --num-gpus "$gpus" \\
    --dashboard-agent-listen-port $((port + 3)) --temp-dir "$ray_dir" &
ray_pids+=($!)
autolfads slurm ray-wait "$address" --nodes $((SLURM_JOB_NUM_NODES + 1))"""


def _search_command(settings: SlurmSettings, backend: list[str]) -> list[str]:
    """The search as a bash array, an option a line: the same arguments on every start of the job."""
    lines = [" ".join(map(shlex.quote, group)) for group in settings.search_args]
    return ["search=(autolfads search", *(f"    {line}" for line in [*lines, *backend]), ")"]


RUN_SEARCH = [
    'log "running: ${search[*]}"',
    '"${search[@]}" &',
    "search_pid=$!",
    'wait "$search_pid"',
    'search_pid=""',
    'log "the search is complete"',
]


# ------------------------------------------------------------------------------------------------ the cluster
@dataclass(frozen=True)
class SlurmNode:
    name: str
    cpus: int
    gpus: int


def gpu_count(gres: str) -> int:
    """GPUs in sinfo's Gres field: "gpu:4", "gpu:a100:4(S:0-1)", "gpu:2,mps:200", "(null)"."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        fields = item.strip().split(":")
        if fields[0] == "gpu":
            total += int(fields[-1]) if len(fields) > 1 and fields[-1].isdigit() else 1
    return total


def parse_nodes(text: str) -> list[SlurmNode]:
    """`sinfo -h -N -o '%N|%c|%G'`: one line per node (a node of several partitions once)."""
    nodes = {}
    for line in text.splitlines():
        if line.strip():
            name, cpus, gres = line.strip().split("|")
            nodes[name] = SlurmNode(name, int(cpus.rstrip("+")), gpu_count(gres))
    return list(nodes.values())


def parse_partitions(text: str) -> tuple[list[str], str | None]:
    """`sinfo -h -o %P`: the partitions, and the default one (marked '*')."""
    names = [line.strip() for line in text.splitlines() if line.strip()]
    default = next((name.rstrip("*") for name in names if name.endswith("*")), None)
    return [name.rstrip("*") for name in names], default


def cluster_problems(
    settings: SlurmSettings, partitions: list[str], default: str | None, nodes: list[SlurmNode]
) -> list[str]:
    """Whether the partition exists and has settings.nodes nodes with the CPUs and GPUs asked for.
    nodes: the partition's (empty when it does not exist)."""
    partition = settings.partition or default
    if partition is None:
        return [f"this cluster has no default partition; give --partition (one of {', '.join(partitions)})"]
    if partition not in partitions:
        return [f"--partition {partition}: no such partition on this cluster (sinfo lists {', '.join(partitions)})"]
    cpus = settings.cpus or 1
    fit = [node for node in nodes if node.cpus >= cpus and node.gpus >= settings.gpus]
    if len(fit) >= settings.nodes:
        return []
    most_gpus, most_cpus = max((n.gpus for n in nodes), default=0), max((n.cpus for n in nodes), default=0)
    if settings.gpus > most_gpus:
        return [f"--gpus {settings.gpus}: the nodes of partition {partition} have at most {most_gpus} GPUs each"]
    if cpus > most_cpus:
        return [f"--cpus {cpus}: the nodes of partition {partition} have at most {most_cpus} CPUs each"]
    return [
        f"--nodes {settings.nodes}: partition {partition} has {len(fit)} node(s) with {cpus} CPUs and "
        f"{settings.gpus} GPUs"
    ]


# ------------------------------------------------------------------------------------------------ I/O
class SlurmCommandFailed(ConfigError):
    """A SLURM command (sinfo, sbatch) failed: no controller answers, or it refused the request."""


def slurm_command(name: str) -> str | None:
    """The path of a SLURM command (sinfo, sbatch), None when SLURM is not installed here."""
    return shutil.which(name)


def run_slurm(command: list[str]) -> str:
    """A SLURM command's output; its failure (e.g. no controller answers) is one line."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SlurmCommandFailed(f"{command[0]} failed: {err}") from None
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        problem = lines[-1].strip() if lines else f"exit status {result.returncode}"  # the last: why it gave up
        raise SlurmCommandFailed(f"{command[0]} failed: {problem}")
    return result.stdout


def check_cluster(settings: SlurmSettings) -> None:
    """Check the request against this machine's cluster (sinfo) before anything is written."""
    partitions, default = parse_partitions(run_slurm(["sinfo", "-h", "-o", "%P"]))
    partition = settings.partition or default
    nodes = parse_nodes(run_slurm(["sinfo", "-h", "-N", "-p", partition, "-o", "%N|%c|%G"])) if partition else []
    problems = cluster_problems(settings, partitions, default, nodes)
    if problems:
        raise ConfigError("; ".join(problems))


def submit(script: Path) -> str:
    """sbatch the script; returns the job id."""
    return run_slurm(["sbatch", "--parsable", str(script)]).strip().split(";")[0]


def wait_for_ray(address: str, nodes: int, timeout_s: float, poll_s: float = 1.0) -> int:
    """Wait until the Ray cluster at `address` has `nodes` live nodes; returns how many it has."""
    import logging
    import socket

    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:  # nothing listens until the head's GCS is up
        try:
            socket.create_connection((host, int(port)), timeout=poll_s).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise ConfigError(f"no Ray head answers at {address} after {timeout_s:g} s") from None
            time.sleep(poll_s)
    import ray

    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        while (alive := sum(node["Alive"] for node in ray.nodes())) < nodes:
            if time.monotonic() > deadline:
                raise ConfigError(f"the Ray cluster at {address} has {alive} of {nodes} nodes after {timeout_s:g} s")
            time.sleep(poll_s)
    finally:
        ray.shutdown()
    return alive
