"""The Ray scheduler's files under WORKDIR/ray/: its state (pbt_state.json, rewritten atomically), every
accepted report with its per-epoch rows (reports.jsonl, appended) and one row per registered checkpoint
(members.csv: node, trial, checksums of the restored and the saved state)."""

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import CheckpointError
from ..files import write_atomic
from ..layout import MEMBERS_FILE, PBT_STATE_FILE, RAY_DIR, REPORTS_FILE, TENSORBOARD_DIR, member_folder
from ..names import SELECT_METRICS
from ..train.records import TensorBoard

STATE_VERSION = 1

# Where a member's generation ran, what it started from and what it saved: in members.csv and in every report.
_TRIAL_FIELDS = ("node_id", "torch_threads", "restored_member", "restored_checksum", "saved_checksum", "report_id")

MEMBERS_FIELDS = ("generation", "member", "trial_id", *_TRIAL_FIELDS, "checkpoint")

# The fields of a trial report shared by its members (the rest are each member's metrics).
REPORT_KEYS = ("epoch", "generation", "member", "group", *_TRIAL_FIELDS, "pid", "peak_rss_mib", "started_at")

# What reports.jsonl keeps of a member's report besides its rows.
REPORT_ENTRY_FIELDS = (
    "report_id",
    "node_id",
    "pid",
    "peak_rss_mib",
    "started_at",
    "restored_member",
    "restored_checksum",
    "saved_checksum",
    *SELECT_METRICS,
)


def read_state(workdir: Path, population: int, members_per_trial: int) -> dict | None:
    """The scheduler's saved state (None for a new search), checked to belong to this search."""
    path = workdir / RAY_DIR / PBT_STATE_FILE
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    if state.get("version") != STATE_VERSION or state.get("population") != population:
        raise CheckpointError(f"{path} belongs to a different search; use a new workdir")
    saved = state.get("members_per_trial", 1)
    if saved != members_per_trial:
        raise CheckpointError(
            f"{path} is a search with {saved} members per trial; rerun it with --members-per-trial {saved}"
        )
    return state


def write_state(workdir: Path, state: dict) -> None:
    path = workdir / RAY_DIR / PBT_STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"version": STATE_VERSION, **state}))


class RayRecords:
    """The append-only side outputs: reports.jsonl, members.csv and each member's TensorBoard scalars."""

    def __init__(self, workdir: Path, log: Callable[[str], None]):
        self.workdir, self.log = workdir, log
        self.boards: dict[int, TensorBoard] = {}

    def rows(self) -> dict[tuple[int, int], list[dict]]:
        return read_reports(self.workdir / RAY_DIR / REPORTS_FILE)

    def add_report(self, member: int, generation: int, trial_id: str, metrics: dict, rows: list[dict]) -> None:
        entry = {"generation": generation, "member": member, "trial_id": trial_id, "time": time.time()}
        entry.update({k: metrics[k] for k in REPORT_ENTRY_FIELDS if k in metrics})  # older reports: no all-neuron score
        append_report(self.workdir / RAY_DIR / REPORTS_FILE, {**entry, "rows": rows})
        try:
            folder = self.workdir / TENSORBOARD_DIR / member_folder(member)
            board = self.boards.setdefault(member, TensorBoard(folder))
            for row in rows:
                board.add(row)
            if board.writer is not None:
                board.writer.flush()
        except Exception as err:  # TensorBoard is a convenience; the CSV tables are the record
            self.log(f"tensorboard: {err}")

    def add_checkpoint(self, trial_id: str, report: dict) -> None:
        """A member's report whose checkpoint Tune registered: one row of members.csv."""
        values = {k: report["metrics"].get(k, "") for k in MEMBERS_FIELDS}
        values.update(trial_id=trial_id, checkpoint=report["checkpoint"])
        append_members_row(self.workdir / RAY_DIR / MEMBERS_FILE, values)

    def close(self) -> None:
        for board in self.boards.values():
            board.close()


def read_reports(path: Path) -> dict[tuple[int, int], list[dict]]:
    """Per-epoch rows by (member, generation); a later report of the same generation replaces an earlier one."""
    rows: dict[tuple[int, int], list[dict]] = {}
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        rows[(int(entry["member"]), int(entry["generation"]))] = entry["rows"]
    return rows


def append_report(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write("\n" + json.dumps(entry) + "\n")  # a leading newline isolates a line cut by an earlier kill
        f.flush()
        os.fsync(f.fileno())


def append_members_row(path: Path, values: dict) -> None:
    """One row of MEMBERS_FIELDS (the header first in a new file)."""
    new = not path.exists()
    with open(path, "a") as f:
        if new:
            f.write(",".join(MEMBERS_FIELDS) + "\n")
        f.write(",".join(str(values[k]) for k in MEMBERS_FIELDS) + "\n")
