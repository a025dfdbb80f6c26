"""Small real sessions (~100 trials): the shipped small-session config and search space, and the quality
benchmark (benchmarks/quality.py: its --help and R^2 always; a few-epoch run on synthetic NLB data and on the
shared MC_Maze_Small file, slow, the latter when the file is here)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autolfads.config import load_config
from autolfads.search.space import default_search_space, load_search_space
from autolfads.sizing import DataShape, sized_values

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "quality.py"
SHARED_DATA = Path(os.environ.get("AUTOLFADS_SHARED_DATA", ROOT.parent / "shared" / "data"))
SHARED_NWB = SHARED_DATA / "sub-Jenkins_ses-small_desc-test_ecephys.nwb"


def test_the_shipped_small_configs_are_what_the_sizing_rule_picks_for_their_data():
    """small_session.yaml: 80 training trials, shapes from the file; mc_maze_small.yaml: NLB's MC_Maze_Small
    (75 training trials, 107 + 35 neurons, 140 + 40 bins). A change of the rule must be carried to them."""
    small, nlb = (
        load_config(ROOT / "examples" / "configs" / "small_session.yaml"),
        load_config(ROOT / "examples" / "configs" / "mc_maze_small.yaml"),
    )
    assert small.model.data_dim is None and small.model.seq_len is None  # shapes from the file: any session
    for config, shape in (
        (small, DataShape(train_trials=80, heldin=86, heldout=21, bins=140)),
        (nlb, DataShape(train_trials=75, heldin=107, heldout=35, bins=140, forward_bins=40)),
    ):
        for key, value in sized_values(shape).items():
            section, field = key.split(".")
            assert getattr(getattr(config, section), field) == value, key
    assert (small.train.batch_size, small.train.max_epochs, nlb.train.batch_size) == (16, 800, 8)
    # NLB's light regularisation (benchmarks/RESULTS.md): not dropout 0.3 and KL/L2 1e-3
    assert (small.model.dropout_rate, small.model.cd_rate) == (nlb.model.dropout_rate, nlb.model.cd_rate) == (0.02, 0.3)
    assert small.train.kl_co_weight == small.train.l2_gen_scale == 1e-4
    assert small.train.select_metric == nlb.train.select_metric == "smth_val_nll_all"


def test_small_search_space_loads_and_holds_the_small_session_penalties():
    space, published = load_search_space(ROOT / "examples" / "search_space_small.yaml"), default_search_space()
    assert set(space.params) == set(published.params)
    small = load_config(ROOT / "examples" / "configs" / "small_session.yaml")
    for name in ("kl_co_weight", "kl_ic_weight", "l2_gen_scale", "l2_con_scale"):
        value = getattr(small.train, name)
        assert space.params[name].low <= value <= space.params[name].high, name
    assert (
        space.params["kl_co_weight"].low >= published.params["kl_co_weight"].high
    )  # stronger KL than the published space


def test_benchmark_help_names_its_options():
    result = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True, check=True)
    for option in ("--workdir", "--dataset", "--splits", "--methods", "--jobs", "--search-options", "--smoke"):
        assert option in result.stdout


def test_benchmark_r2_is_sklearns_variance_weighted_r2():
    from sklearn.metrics import r2_score

    spec = importlib.util.spec_from_file_location("quality", BENCH)
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    rng = np.random.default_rng(0)
    truth = rng.gamma(2.0, 1.0, size=(5, 7, 3)) * np.array([1.0, 4.0, 0.5])  # neurons of different variances
    rates = truth + rng.normal(0, 0.5, size=truth.shape)
    expected = r2_score(truth.reshape(-1, 3), rates.reshape(-1, 3), multioutput="variance_weighted")
    assert quality.r2(rates, truth) == pytest.approx(expected, rel=1e-12)
    assert quality.r2(truth, truth) == 1.0


def run_benchmark(tmp_path: Path, *args: str) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, str(BENCH), "--workdir", str(tmp_path), "--splits", "0", "--smoke", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_benchmark_smoke_run_on_synthetic_nlb_scores_r2_to_the_truth(tmp_path):
    pytest.importorskip("sklearn", reason="the smoothing baseline needs scikit-learn")
    pytest.importorskip("nlb_tools", reason="data nlb needs nlb_tools")
    out = run_benchmark(tmp_path, "--dataset", "nlb-synthetic", "--methods", "smoothing")
    row = next(line for line in out.splitlines() if line.startswith("| smoothing |"))
    r2 = float(row.split("|")[4])
    assert 0.0 < r2 < 1.0  # smoothed counts against true rates: some, not all, of the variance
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["0"]["smoothing"]) == {"co-bps", "R2", "wall_s"}


@pytest.mark.slow
@pytest.mark.skipif(
    not SHARED_NWB.is_file(),
    reason=f"the shared real MC_Maze_Small file is not here ({SHARED_NWB}; set AUTOLFADS_SHARED_DATA)",
)
def test_benchmark_smoke_run_on_the_real_session(tmp_path):
    pytest.importorskip("sklearn", reason="the smoothing baseline needs scikit-learn")
    pytest.importorskip("pynwb", reason="data nwb needs pynwb")
    out = run_benchmark(tmp_path, "--nwb", str(SHARED_NWB), "--methods", "smoothing", "small_session")
    assert "# mc_maze_small, splits [0]" in out
    assert "| smoothing |" in out and "| small_session |" in out
    assert (tmp_path / "split0" / "smoothing.h5").is_file()
    assert (tmp_path / "split0" / "small_session" / "lfads_output.h5").is_file()
    # a rerun keeps what the split's folder holds: nothing is trained again
    assert "split 0 small_session:" not in run_benchmark(
        tmp_path, "--nwb", str(SHARED_NWB), "--methods", "smoothing", "small_session"
    )
