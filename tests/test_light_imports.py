"""The light commands import no torch, matplotlib, ray or pynwb (issue 14, item 1): `autolfads --help`, the
Katib manifest writer and `config show` answer in a fraction of a second, on machines without a GPU stack.

Each command runs in a fresh interpreter; a heavy import is reported with the chain of autolfads modules
that led to it, so the failure names the module to fix.
"""

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
