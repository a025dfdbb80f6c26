"""Light paths stay light: package inits and the search space import no torch, and no module of train/ or
search/ imports the report or the command line (reports are the callers' business)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "autolfads"


@pytest.mark.parametrize("module", ["autolfads.search", "autolfads.search.space", "autolfads.train"])
def test_import_loads_no_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


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
