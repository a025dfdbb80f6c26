"""What a run or a search leaves as it goes: the log file, the progress display, TensorBoard scalars, CSV tables.

Shared by `train.run` and every search backend, so neither borrows from the other.
"""

import csv
import io
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from ..files import write_atomic


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rewrite a whole CSV atomically from rows kept in a checkpoint, so it never disagrees with it."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    csv_writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    csv_writer.writeheader()
    csv_writer.writerows(rows)
    write_atomic(path, buffer.getvalue())


class RunLog:
    """Appends timestamped lines to a log file (train.log, search.log) and shows them on stderr."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, message: str) -> None:
        tqdm.write(self.write(message), file=sys.stderr)  # above a progress bar, if one is showing
        sys.stderr.flush()

    def write(self, message: str) -> str:
        """Append to the file only (what is shown elsewhere, like a closing summary printed on stdout)."""
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        with open(self.path, "a") as f:
            f.write(line + "\n")
        return line


class Progress:
    """A training run's progress: a tqdm bar on a terminal, otherwise a plain line at most every 30 seconds
    (and at the end)."""

    def __init__(self, start: int, total: int, log: Callable[[str], None], metric: str, interval_s: float = 30.0):
        """metric: the selection metric (train.select_metric), shown beside the raw held-in NLL."""
        self.start, self.total, self.log, self.metric, self.interval_s = start, total, log, metric, interval_s
        self.began = self.last_line = time.monotonic()
        self.bar = None
        if sys.stderr.isatty():
            self.bar = tqdm(initial=start, total=total, unit="epoch", file=sys.stderr, dynamic_ncols=True)

    def update(self, epoch: int, row: dict) -> None:
        summary = (
            f"val nll {row.get('val_nll_heldin', math.nan):.5f} | {self.metric} {row.get(self.metric, math.nan):.5f}"
        )
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(summary)
            return
        now = time.monotonic()
        if now - self.last_line >= self.interval_s or epoch >= self.total:
            done = epoch - self.start
            eta = (now - self.began) / done * (self.total - epoch) if done else math.nan
            self.log(f"epoch {epoch}/{self.total} | {summary} | eta {eta / 60:.1f} min")
            self.last_line = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TensorBoard:
    """Scalars of every epoch under tensorboard/ (opened lazily: importing TensorBoard takes a second)."""

    def __init__(self, folder: Path):
        self.folder, self.writer = folder, None

    def add(self, row: dict) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.folder))
        for name, value in row.items():
            if name not in ("epoch", "member") and math.isfinite(value):
                self.writer.add_scalar(name, value, row["epoch"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
