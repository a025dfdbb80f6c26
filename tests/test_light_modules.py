"""Light paths stay light. The package inits, the search space, the data writers, the NLB scoring and the
Kubernetes manifest writers import no torch (nor matplotlib, ray or pynwb), each checked in a fresh
interpreter; and no module of train/ or search/ imports the report or the command line (reports are the
callers' business)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "matplotlib", "ray", "pynwb")
LIGHT = (
    "autolfads.data",
    "autolfads.data.hdf5",
    "autolfads.data.output_file",
    "autolfads.data.nlb_targets",
    "autolfads.data.synthetic",
    "autolfads.data.calcium_synthetic",
    "autolfads.data.multisession_synthetic",
    "autolfads.data.nlb_synthetic",
    "autolfads.data.nlb",
    "autolfads.data.nlb_datasets",
    "autolfads.data.nlb_tensors",
    "autolfads.data.session",
    "autolfads.data.nwb",
    "autolfads.data.nwb_export",
    "autolfads.data.spikes",
    "autolfads.data.continuous",
    "autolfads.evaluate",
    "autolfads.evaluate.metrics",
    "autolfads.evaluate.scoring",
    "autolfads.evaluate.files",
    "autolfads.deploy",
    "autolfads.deploy.katib",
    "autolfads.deploy.rayjob",
    "autolfads.deploy.slurm",
    "autolfads.report",
    "autolfads.files",
    "autolfads.names",
    "autolfads.layout",
    "autolfads.search",
    "autolfads.search.space",
    "autolfads.train",
)
SRC = Path(__file__).resolve().parents[1] / "src" / "autolfads"


def heavy_modules_after_import(module: str) -> list[str]:
    code = f"import json, sys, {module}; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.mark.parametrize("module", LIGHT)
def test_module_imports_no_heavy_library(module):
    assert heavy_modules_after_import(module) == []


def imported(path: Path, package: str) -> list[str]:
    """Absolute names of every module (or name in a module) a file of autolfads.<package> imports."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (["autolfads", package] if node.level == 1 else ["autolfads"]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names


@pytest.mark.parametrize("package", ["train", "search"])
def test_train_and_search_import_no_report_and_no_cli(package):
    for path in sorted((SRC / package).glob("*.py")):
        for name in imported(path, package):
            assert not name.startswith(("autolfads.report", "autolfads.cli")), f"{path.name} imports {name}"
