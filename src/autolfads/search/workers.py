"""The embedded backend's executors: the population in slices, each on its own population axis.

`placement.plan_workers` (pure) splits P members over W workers, the usable CPUs over their torch threads and
the workers over the GPUs chosen by `placement.search_gpus` (every visible GPU by default).
`MemberSlice` trains one slice a generation at a time, as population axes of at most `plan.members_per_axis`
members each, one after another (`members_per_axis`: 2 on a CPU, where bigger axes cost more per member; the
whole slice on a GPU). `InProcessWorkers` runs one slice in the driver's
process (W = 1); `ProcessWorkers` runs W long-lived worker processes, one slice each: fresh interpreters
(`python -m autolfads.search.worker_process`, as multiprocessing's 'spawn' but without re-running the caller's
main module, so a script calling search() needs no `if __name__ == "__main__"` guard; torch and fork do not
mix) talking over a socket pair. Both answer the same two calls: train(epochs) -> every slice's state, and
load(states). The driver joins the slices, makes the PBT decisions and sends the exploited state back, so an
exploit between members of different workers is an exact copy (train.population_state).

Messages between the driver and a worker are torch.save'd dicts read with torch.load(weights_only=True):
plain tensors, numbers, strings and lists, never pickled objects. A worker dies with the driver
(PR_SET_PDEATHSIG on Linux, else a watchdog on the parent's pid); a worker that dies is noticed by the end of
file on its socket (only the worker holds the other end) and raises WorkerFailed (the last generation's
checkpoint is intact).
"""

import contextlib
import ctypes
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..errors import AutoLFADSError
from ..runtime import set_torch_threads
from ..train.nlb_scoring import load_nlb_targets
from ..train.population_state import PopulationState
from ..train.run import read_sessions
from ..train.trainer import Trainer
from .placement import WorkerPlan

PR_SET_PDEATHSIG = 1
STOP_TIMEOUT_S = 10.0  # a worker told to stop that is still alive after this is killed
START_TIMEOUT_S = 300.0  # importing torch and reading the data; a worker silent for longer is declared stuck


class WorkerFailed(AutoLFADSError):
    """A worker process died or raised; the search's last checkpoint is intact."""


def axis_groups(members: int, per_axis: int | None) -> list[list[int]]:
    """Positions 0..members-1 in contiguous, balanced groups of at most per_axis (None: one group)."""
    if per_axis is None or members <= per_axis:
        return [list(range(members))]
    return [part.tolist() for part in np.array_split(np.arange(members), -(-members // per_axis))]


def on_device(config: Config, device: str) -> Config:
    """The config with train.device set: what a worker on that device trains with."""
    return config.model_copy(update={"train": config.train.model_copy(update={"device": device})})


class MemberSlice:
    """A slice of the population on Trainers of at most `per_axis` members each (None: one Trainer), trained
    one after another every epoch. Members share no weights and each has its own random streams, and every
    Trainer draws the same batch order, so the grouping does not change what a member computes. Its history
    holds only the generation in progress (the driver keeps the search's history)."""

    def __init__(
        self, config: Config, data, hparams: Sequence[dict], seeds: Sequence[int], per_axis: int | None = None
    ):
        self.groups = axis_groups(len(hparams), per_axis)
        targets = load_nlb_targets(config)
        self.trainers = [
            Trainer(
                config,
                data,
                population=[hparams[m] for m in group],
                member_seeds=[seeds[m] for m in group],
                nlb_targets=targets,
            )
            for group in self.groups
        ]
        self.ramp_end_epoch = self.trainers[0].ramp_end_epoch

    def train(self, epochs: int, nlb: bool, on_epoch: Callable[[int], None]) -> PopulationState:
        """Train `epochs` epochs (NLB metrics in the last one if nlb); the slice's state with this generation's rows."""
        for done in range(1, epochs + 1):
            for trainer in self.trainers:
                trainer.run_epoch(nlb=nlb and done == epochs)
            on_epoch(done)
        states = [t.population_state().select(range(t.population_size)) for t in self.trainers]
        for trainer in self.trainers:
            trainer.history.clear()
        return states[0] if len(states) == 1 else PopulationState.join(states, self.groups)

    def load(self, state: PopulationState) -> None:
        for trainer, group in zip(self.trainers, self.groups, strict=True):
            trainer.load_population_state(state.select(group).without_history())


class InProcessWorkers:
    """One slice, trained in the driver's process."""

    def __init__(
        self,
        plan: WorkerPlan,
        config: Config,
        data,
        hparams: Sequence[dict],
        seeds: Sequence[int],
        log: Callable[[str], None],
    ):
        if plan.workers != 1:
            raise ValueError("InProcessWorkers runs one slice")
        self.plan = plan
        set_torch_threads(plan.threads[0])
        self.slice = MemberSlice(on_device(config, plan.device(0)), data, hparams, seeds, plan.members_per_axis)
        self.ramp_end_epoch = self.slice.ramp_end_epoch

    def train(self, epochs: int, nlb: bool, on_epoch: Callable[[int, int], None]) -> list[PopulationState]:
        return [self.slice.train(epochs, nlb, lambda done: on_epoch(done, epochs))]

    def load(self, states: Sequence[PopulationState]) -> None:
        self.slice.load(states[0])

    def close(self) -> None:
        pass


class ProcessWorkers:
    """W worker processes, one slice each, alive for the whole search."""

    def __init__(
        self,
        plan: WorkerPlan,
        config: Config,
        data,
        hparams: Sequence[dict],
        seeds: Sequence[int],
        log: Callable[[str], None],
    ):
        """data is read again by each worker from config.data.dir (the resolved path), not sent."""
        self.plan = plan
        self.connections: list[Connection] = []
        self.processes: list[subprocess.Popen] = []
        package_root = str(Path(__file__).resolve().parents[2])  # this autolfads, even when it is not installed
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))}
        try:
            for w, members in enumerate(plan.members):
                driver_end, worker_end = socket.socketpair()
                command = [
                    sys.executable,
                    "-m",
                    "autolfads.search.worker_process",
                    str(worker_end.fileno()),
                    str(os.getpid()),
                ]
                self.processes.append(
                    subprocess.Popen(command, pass_fds=[worker_end.fileno()], env=env, stdin=subprocess.DEVNULL)
                )
                worker_end.close()  # the worker's end lives only in the worker: its death is end of file here
                connection = Connection(driver_end.detach())
                self.connections.append(connection)
                job = {
                    "kind": "start",
                    "config": on_device(config, plan.device(w)).to_dict(),
                    "hparams": [dict(hparams[m]) for m in members],
                    "seeds": [seeds[m] for m in members],
                    "threads": plan.threads[w],
                    "members_per_axis": plan.members_per_axis,
                }
                _send(connection, job)
            self.ramp_end_epoch = self._gather("ready", timeout_s=START_TIMEOUT_S)[0]["ramp_end_epoch"]
        except BaseException:
            self.close()
            raise
        for w, (process, members) in enumerate(zip(self.processes, plan.members, strict=True)):
            log(
                f"worker {w}: pid {process.pid}, members {_span(members)}, {plan.threads[w]} torch thread(s), "
                f"on {plan.device(w)}"
            )

    def train(self, epochs: int, nlb: bool, on_epoch: Callable[[int, int], None]) -> list[PopulationState]:
        self._send_all([{"kind": "train", "epochs": epochs, "nlb": nlb}] * self.plan.workers)
        done = [0] * self.plan.workers

        def progress(worker: int, message: dict) -> None:
            done[worker] = message["done"]
            on_epoch(min(done), epochs)

        return [PopulationState.from_dict(message["state"]) for message in self._gather("trained", on_epoch=progress)]

    def load(self, states: Sequence[PopulationState]) -> None:
        self._send_all([{"kind": "load", "state": state.to_dict()} for state in states])
        self._gather("loaded")

    def close(self) -> None:
        """Stop every worker: ask, wait, then kill what is left (never leave a process behind)."""
        for connection in self.connections:
            with contextlib.suppress(OSError):  # it is gone already
                _send(connection, {"kind": "stop"})
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for connection in self.connections:
            connection.close()

    def _send_all(self, messages: Sequence[dict]) -> None:
        for worker, (connection, message) in enumerate(zip(self.connections, messages, strict=True)):
            try:
                _send(connection, message)
            except OSError:  # a broken pipe: the worker is gone
                self._died(worker)

    def _gather(
        self, kind: str, on_epoch: Callable[[int, dict], None] | None = None, timeout_s: float | None = None
    ) -> list[dict]:
        """Every worker's next `kind` message (epoch messages go to on_epoch). A worker that dies (end of file
        on its socket), raises or (with timeout_s) stays silent raises WorkerFailed: never a hang."""
        replies: dict[int, dict] = {}
        while len(replies) < len(self.connections):
            pending = {self.connections[w]: w for w in range(len(self.connections)) if w not in replies}
            ready = wait(list(pending), timeout=timeout_s)
            if not ready:
                raise WorkerFailed(f"no answer from the workers within {timeout_s:.0f} s")
            for connection in ready:
                worker = pending[connection]
                try:
                    message = _receive(connection)
                except (EOFError, OSError):
                    self._died(worker)
                if message["kind"] == "error":
                    raise WorkerFailed(
                        f"worker {worker} (members {_span(self.plan.members[worker])}) failed:\n{message['traceback']}"
                    )
                if message["kind"] == "epoch" and on_epoch is not None:
                    on_epoch(worker, message)
                elif message["kind"] == kind:
                    replies[worker] = message
        return [replies[w] for w in range(len(self.connections))]

    def _died(self, worker: int) -> None:
        process = self.processes[worker]
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:  # its socket broke but it lives on: end it, it cannot be trusted
            process.kill()
            process.wait()
        raise WorkerFailed(
            f"worker {worker} (pid {process.pid}, members {_span(self.plan.members[worker])}) "
            f"died (exit code {process.returncode}); "
            "the checkpoint of the last completed generation is intact: rerun the same command to resume"
        )


def _span(members: Sequence[int]) -> str:
    return f"{members[0]}-{members[-1]}"


def _send(connection: Connection, message: dict) -> None:
    buffer = io.BytesIO()
    torch.save(message, buffer)
    connection.send_bytes(buffer.getvalue())


def _receive(connection: Connection) -> dict:
    """States travel on the CPU: the driver joins slices of workers on different GPUs, and a worker's
    Trainer.load_population_state puts what it receives on its own device."""
    return torch.load(io.BytesIO(connection.recv_bytes()), map_location="cpu", weights_only=True)


def _die_with_parent(parent_pid: int) -> None:
    """No orphans: the kernel kills this process when the driver dies (Linux); elsewhere a thread watches."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        linux = sys.platform.startswith("linux")
    except (OSError, AttributeError):
        linux = False
    if os.getppid() != parent_pid:  # the driver died before the request took effect
        os._exit(1)
    if not linux:

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()


def run_worker(connection: Connection, parent_pid: int) -> None:
    """A worker process's life: start its slice, then train / load / stop as the driver says."""
    from ..runtime import reuse_freed_memory

    _die_with_parent(parent_pid)
    reuse_freed_memory()  # each step reuses the last one's memory, as the command line does in the driver
    try:
        job = _receive(connection)
        set_torch_threads(job["threads"])
        config = Config.model_validate(job["config"])
        work = MemberSlice(
            config, read_sessions(config, config.data.dir), job["hparams"], job["seeds"], job["members_per_axis"]
        )
        _send(connection, {"kind": "ready", "ramp_end_epoch": work.ramp_end_epoch})
        while True:
            try:
                message = _receive(connection)
            except EOFError:  # the driver is gone
                return
            if message["kind"] == "train":
                state = work.train(
                    message["epochs"], message["nlb"], lambda done: _send(connection, {"kind": "epoch", "done": done})
                )
                _send(connection, {"kind": "trained", "state": state.to_dict()})
            elif message["kind"] == "load":
                work.load(PopulationState.from_dict(message["state"]))
                _send(connection, {"kind": "loaded"})
            elif message["kind"] == "stop":
                return
    except Exception:
        with contextlib.suppress(OSError):
            _send(connection, {"kind": "error", "traceback": traceback.format_exc()})
        raise SystemExit(1) from None
