"""search/progress.py: the search progress display, plain lines without a terminal, the population's best
now, and a bar on a terminal."""

from __future__ import annotations

import io
import sys

import pytest

from autolfads.names import HELDIN_METRIC
from autolfads.search.progress import SearchProgress


# ----------------------------------------------------------------------------------------- progress and TensorBoard
def test_search_progress_degrades_to_plain_lines(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    lines = []
    progress = SearchProgress(population=4, max_generations=3, metric=HELDIN_METRIC, log=lines.append, interval_s=0.0)
    progress.epoch(1, 5)
    assert lines[-1].startswith("search: generation 1/3 | members 0/4 | epoch 1/5 | best smth_val_nll_heldin —")
    progress.member_done(0, 0.9)
    progress.member_done(1, float("nan"))
    assert "members 2/4" in lines[-1] and "best smth_val_nll_heldin 0.90000" in lines[-1] and "eta <= " in lines[-1]
    for member in (2, 3):
        progress.member_done(member, 0.8)
    progress.generation_done()
    assert "generation 2/3 | members 0/4" in lines[-1] and "0.80000" in lines[-1]
    progress.generation_done(finished=True)
    assert "done after 2 generations" in lines[-1] and "eta" not in lines[-1]
    progress.close()

    quiet = []  # the default interval: at most a line every 30 s, and the last one
    progress = SearchProgress(4, 3, HELDIN_METRIC, log=quiet.append)
    progress.epoch(1, 5)
    progress.member_done(0, 0.5)
    progress.generation_done(finished=True)
    assert len(quiet) == 1 and "done after 1 generations" in quiet[0]


def test_search_progress_shows_the_populations_best_now(monkeypatch):
    """The closing summary names the last generation's best member; the progress lines show the same value, not
    the best ever seen (a member's smoothed NLL can rise after its best generation)."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    lines = []
    progress = SearchProgress(population=2, max_generations=3, metric=HELDIN_METRIC, log=lines.append, interval_s=0.0)
    progress.member_done(0, 0.5)
    progress.member_done(1, 0.7)
    progress.generation_done()
    assert "best smth_val_nll_heldin 0.50000" in lines[-1]  # until a member reports, the last generation's
    progress.member_done(1, 0.6)
    progress.member_done(0, 0.55)
    progress.generation_done(finished=True)
    assert "done after 2 generations" in lines[-1] and "best smth_val_nll_heldin 0.55000" in lines[-1]


def test_search_progress_shows_a_bar_on_a_terminal(monkeypatch):
    stream = io.StringIO()
    stream.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", stream)
    progress = SearchProgress(population=2, max_generations=2, metric=HELDIN_METRIC, log=pytest.fail)
    progress.member_done(0, 0.7)
    progress.member_done(1, 0.6)
    progress.generation_done()
    progress.close()
    assert (
        "member-gen" in stream.getvalue()
        and "2/4" in stream.getvalue()
        and "best smth_val_nll_heldin 0.60000" in stream.getvalue()
    )
