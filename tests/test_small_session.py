"""Small real sessions (~100 trials): the shipped small-session config and search space, and the real-data
benchmark (benchmarks/mc_maze_small_real.py: its --help always; a few-epoch run on the shared MC_Maze_Small
file, slow, when the file is here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autolfads.config import load_config
from autolfads.search.space import default_search_space, load_search_space

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "mc_maze_small_real.py"
SHARED_DATA = Path(os.environ.get("AUTOLFADS_SHARED_DATA", ROOT.parent / "shared" / "data"))
SHARED_NWB = SHARED_DATA / "sub-Jenkins_ses-small_desc-test_ecephys.nwb"


def test_small_session_config_is_smaller_with_small_batches_and_shapes_from_the_file():
    small, nlb = (
        load_config(ROOT / "examples" / "configs" / "small_session.yaml"),
        load_config(ROOT / "examples" / "configs" / "mc_maze_small.yaml"),
    )
    assert small.model.data_dim is None and small.model.seq_len is None  # shapes from the file: any session
    assert small.model.gen_dim < nlb.model.gen_dim and small.model.fac_dim < nlb.model.fac_dim
    assert small.train.batch_size < nlb.train.batch_size and small.train.patience < nlb.train.patience
    # the measured setting (benchmarks/RESULTS.md): NLB's light regularisation, not dropout 0.3 and KL/L2 1e-3
    assert (small.model.dropout_rate, small.model.cd_rate) == (nlb.model.dropout_rate, nlb.model.cd_rate)
    assert small.train.kl_co_weight == small.train.l2_gen_scale == 1e-4


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
    for option in ("--workdir", "--seed", "--population", "--search-space", "--only", "--smoke"):
        assert option in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(
    not SHARED_NWB.is_file(),
    reason=f"the shared real MC_Maze_Small file is not here ({SHARED_NWB}; set AUTOLFADS_SHARED_DATA)",
)
def test_benchmark_smoke_run_on_the_real_session(tmp_path):
    pytest.importorskip("sklearn", reason="the smoothing baseline needs scikit-learn")
    pytest.importorskip("pynwb", reason="data nwb needs pynwb")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, str(BENCH), "--nwb", str(SHARED_NWB), "--workdir", str(tmp_path),
         "--smoke", "--only", "smoothing", "lfads"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "# settings:" in result.stdout and "seed 0" in result.stdout
    assert "| smoothing |" in result.stdout and "| lfads |" in result.stdout
    assert (tmp_path / "smoothing_output.h5").is_file() and (
        tmp_path / "lfads_small_session" / "lfads_output.h5"
    ).is_file()
