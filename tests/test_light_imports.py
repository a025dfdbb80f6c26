"""Light paths stay light (issue 14, item 1). The light commands (`autolfads --help`, the Katib manifest writer,
`config show`) answer in a fraction of a second, on machines without a GPU stack; the package inits, the search
space, the data writers, the NLB scoring and the Kubernetes manifest writers import no torch (nor matplotlib, ray
or pynwb); and no module of train/ or search/ imports the report or the command line (reports are the callers'
business).

Each command and module runs in a fresh interpreter; a heavy import by a command is reported with the chain of
autolfads modules that led to it, so the failure names the module to fix.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "matplotlib", "ray", "pynwb")


LORENZ = Path(__file__).parents[1] / "examples" / "configs" / "lorenz.yaml"


# Runs `main(argv)` and prints, as JSON, each heavy module imported and the autolfads modules importing it.
PROBE = """
import contextlib, io, json, sys, traceback

HEAVY = set(json.loads(sys.argv[1]))
chains = {}


class Watch:
    def find_spec(self, name, path=None, target=None):
        if name in HEAVY and name not in chains:
            files = [frame.filename for frame in traceback.extract_stack()]
            chains[name] = [f.split("src/")[-1] for f in files if "autolfads" in f and "tests" not in f]
        return None


sys.meta_path.insert(0, Watch())
from autolfads.cli import main

with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main(json.loads(sys.argv[2]))
print(json.dumps({name: chains.get(name, ["?"]) for name in HEAVY if name in sys.modules}))
"""


COMMANDS = {
    "help": ["--help"],
    "config show": ["config", "show"],
    "config show --tf2": ["config", "show", "--tf2"],
    "kubeflow katib": [
        *("kubeflow", "katib", "--name", "lorenz", "--image", "ghcr.io/lab/autolfads:0.1.0", "--data-pvc", "data"),
        *("--config-file", str(LORENZ), "--population", "8", "--epochs-per-generation", "5", "--dry-run"),
    ],
    "slurm search": [
        *("slurm", "search", "--config-file", str(LORENZ), "--workdir", "runs/search", "--cpus", "8"),
        *("--backend", "ray", "--nodes", "2", "--cpus-per-member", "2"),
    ],
}


@pytest.mark.parametrize("argv", COMMANDS.values(), ids=COMMANDS.keys())
def test_light_command_imports_no_heavy_module(argv):
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), json.dumps(argv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    heavy = json.loads(result.stdout.splitlines()[-1])
    chains = "; ".join(f"{name} <- {' <- '.join(reversed(chain))}" for name, chain in heavy.items())
    assert not heavy, f"`autolfads {' '.join(argv[:2])}` imported {', '.join(heavy)}: {chains}"


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
