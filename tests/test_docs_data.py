"""docs/data.md runs as written (issue 25, item 3): every `autolfads` command on the page parses, and those of its
bash blocks run top to bottom in one folder, on synthetic files and on the real MC_Maze_Small test session
(skipped with the reason when ../shared is absent). Training and search commands get the tiny model's overrides
appended (trailing KEY VALUE pairs, as a user adds them) and `data lorenz` fewer trials, so that they take
seconds; `dandi download` lines need the internet and are not run."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import cli_command, cli_env, tiny_overrides
from data_files import write_spike_tables
from markdown_commands import bash_commands, bash_lines, parse_error, table_commands

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "data.md"
SHARED_DATA = Path(os.environ.get("AUTOLFADS_SHARED_DATA", ROOT.parent / "shared" / "data"))
SHARED_NWB = SHARED_DATA / "sub-Jenkins_ses-small_desc-test_ecephys.nwb"
GUIDE_NWB = Path("dandi/000140/sub-Jenkins") / SHARED_NWB.name  # where `dandi download DANDI:000140 -o dandi` puts it

# Which inputs a command of the guide's bash blocks needs: the groups run as separate tests.
GROUPS = {
    "nlb": ("dandi/synthetic", "data/maze", "runs/maze"),  # nlb_tools
    "real": ("dandi/000140", "data/mc_maze_small"),  # the shared MC_Maze_Small test file
}


# Appended to the guide's commands here: the tiny model, and fewer Lorenz trials (the lfads-tf2 example config
# fixes the neurons and bins, so those stay).
QUICK = {
    "train": ["--no-report", "--quiet", *tiny_overrides()],
    "search": ["--no-report", *tiny_overrides()],
    "data lorenz": ["--n-conditions", "4", "--trials-per-condition", "4"],
}
SHELL = ("cp", "mkdir")  # the shell commands of the page's bash blocks that run here too (not dandi, docker, kubectl)


def group(argv: list[str]) -> str:
    line = " ".join(argv)
    return next((name for name, marks in GROUPS.items() if any(mark in line for mark in marks)), "plain")


def test_the_guide_has_every_nlb_session_and_every_command_parses():
    text = GUIDE.read_text()
    sessions = {
        "MC_Maze": "000128",
        "MC_RTT": "000129",
        "Area2_Bump": "000127",
        "DMFC_RSG": "000130",
        "MC_Maze_Large": "000138",
        "MC_Maze_Medium": "000139",
        "MC_Maze_Small": "000140",
    }
    for name, dandi in sessions.items():
        assert re.search(rf"\| {name} \| {dandi} \| `dandi download DANDI:{dandi} -o dandi` \|", text), name
    commands = bash_commands(text) + table_commands(text)
    assert len(table_commands(text)) == len(sessions) and len(commands) > 15
    bad = {" ".join(argv): error for argv in commands if (error := parse_error(argv))}
    assert not bad, bad


def run_group(name: str, folder: Path) -> list[str]:
    """Run the guide's commands of one group in `folder`; returns the commands run."""
    (folder / "examples").symlink_to(ROOT / "examples")
    done = []
    for words in bash_lines(GUIDE.read_text(), ("autolfads", *SHELL)):
        if group(words) != name:
            continue
        if words[0] in SHELL:
            subprocess.run(words, cwd=folder, check=True)
            continue
        argv = words[1:]
        extra = QUICK.get(argv[0] if argv[0] != "data" else f"data {argv[1]}", [])
        result = subprocess.run(
            cli_command(*argv, *extra), cwd=folder, env=cli_env(), capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"autolfads {' '.join(argv)}:\n{result.stderr[-3000:]}"
        done.append(argv[0] if argv[0] != "data" else f"data {argv[1]}")
    return done


@pytest.mark.slow
def test_the_guide_runs_on_a_labs_spike_tables_and_the_workflow_layouts(tmp_path):
    write_spike_tables(tmp_path / "lab")
    done = run_group("plain", tmp_path)
    assert done == ["data spikes", "train", "data lorenz", "train", "data lorenz", "search", "kubeflow"]
    assert sorted(p.name for p in (tmp_path / "data" / "lab").iterdir()) == ["session.h5", "session_targets.h5"]
    assert (tmp_path / "runs" / "lab" / "lfads_output.h5").is_file()
    assert (tmp_path / "share" / "output" / "last.ckpt").is_file()  # the container layout's folder trains
    assert (tmp_path / "cluster" / "runs" / "lorenz-search" / "best_model").is_dir()
    assert "claimName: autolfads-data" in (tmp_path / "lorenz-katib.yaml").read_text()


@pytest.mark.slow
def test_the_guide_runs_on_a_synthetic_nlb_session(tmp_path):
    pytest.importorskip("nlb_tools", reason="`data nlb` needs nlb_tools: pip install --no-deps nlb-tools==0.0.4")
    done = run_group("nlb", tmp_path)
    assert done == ["data nlb-synthetic", "data nlb", "train", "evaluate"]
    assert sorted(p.name for p in (tmp_path / "data" / "maze").iterdir()) == ["synthetic.h5", "synthetic_targets.h5"]


@pytest.mark.slow
@pytest.mark.skipif(
    not SHARED_NWB.is_file(),
    reason=f"the real MC_Maze_Small test session is not here ({SHARED_NWB}; a user's clone has no ../shared: set "
    "AUTOLFADS_SHARED_DATA); the synthetic runs of the guide cover its commands",
)
def test_the_guide_runs_on_the_real_mc_maze_small_session(tmp_path):
    (tmp_path / GUIDE_NWB).parent.mkdir(parents=True)
    (tmp_path / GUIDE_NWB).symlink_to(SHARED_NWB)
    assert run_group("real", tmp_path) == ["data nwb", "train"]
    assert (tmp_path / "runs" / "mc_maze_small" / "lfads_output.h5").is_file()
