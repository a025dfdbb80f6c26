"""`autolfads doctor` (cli/doctor.py): versions, devices, Ray, threads, and which recurrent loops training
uses and why."""

from __future__ import annotations

import pytest

from autolfads.cli import main
from autolfads.model.cpp_loops import build_tools_missing


def test_doctor_reports_versions_devices_ray_and_threads(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for item in (
        "python",
        "torch",
        "numpy",
        "ray",
        "torch devices",
        "CUDA available",
        "Ray",
        "recurrent core",
        "torch threads",
        "OMP_NUM_THREADS",
        "recommended",
    ):
        assert any(line.startswith(item + " ") for line in out.splitlines()), item
    assert "cpu" in out and "train.threads 1" in out


def test_doctor_says_the_python_loops_are_used_and_why_not_the_compiled_ones(capsys, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    assert main(["doctor"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("recurrent core "))
    assert line.endswith(
        "manual (python loops; train.recurrent_core auto): cpp cannot be built here: the C++ compiler "
        "'no-such-c++-compiler' is not on PATH"
    )


@pytest.mark.skipif(build_tools_missing() is not None, reason=str(build_tools_missing()))
def test_doctor_says_the_compiled_loops_are_used_where_they_can_be_built(capsys):
    assert main(["doctor"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("recurrent core "))
    assert "cpp (C++ loops; train.recurrent_core auto)" in line
