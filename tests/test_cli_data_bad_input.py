"""Bad input to the commands that make, move and export data: one line naming the right file, option or value,
exit status 2, no traceback, nothing left behind, and every input byte for byte as it was.

The cases: an output that is an input (or another output) of the same command, spelled alike, through a
symlink, `..` or a hard link, for every command that writes; export-nwb into a session other than the
data's; data that cannot train (counts float32 rounds, all zeros, trials with no observed entry); and
messages that named the wrong file or row. Everything runs in process on hand-made files of a few KB.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("pynwb", reason="NWB tests need pynwb: pip install pynwb")
from autolfads.cli import main  # noqa: E402
from autolfads.data import hdf5  # noqa: E402
from conftest import TINY_DATA_ARGS, cli_command, cli_env, tiny_overrides  # noqa: E402
from test_data_nwb import OPTIONS, SPIKES, write_session_nwb, write_spike_csvs  # noqa: E402
from test_data_nwb_export import fake_output  # noqa: E402

SESSION = [*OPTIONS, "--heldout-column", "heldout"]  # `data nwb` / `data spikes` options that work on the files


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """One folder of every input the cases need, made once: a session (NWB and CSVs), its training file and
    targets, an LFADS output of it with its config, a continuous recording and its chops, an HDF5 that is not
    NWB, and a tiny trained run on a Lorenz set. Each test works on its own copy."""
    folder = tmp_path_factory.mktemp("inputs")
    write_session_nwb(folder / "s.nwb", observed_until=None)
    write_spike_csvs(folder)
    assert main(["data", "nwb", "--nwb", str(folder / "s.nwb"), *SESSION, "--out", str(folder / "d.h5")]) == 0
    fake_output(folder, folder / "d.h5")  # lfads_output.h5 and config.yaml
    assert main(["data", "continuous", "--out", str(folder / "rec.h5"), "--n-bins", "120", "--n-neurons", "3"]) == 0
    chop = ["--input", str(folder / "rec.h5"), "--key", "data", "--window", "20", "--out", str(folder / "chops.h5")]
    assert main(["data", "chop", *chop]) == 0
    assert main(["data", "lorenz", "--out", str(folder / "lorenz.h5"), *TINY_DATA_ARGS]) == 0
    run = ["--data", str(folder / "lorenz.h5"), "--checkpoint", str(folder / "run"), "--quiet", "--no-report"]
    assert main(["train", *run, *tiny_overrides(train__max_epochs=1, train__num_samples=2)]) == 0
    return folder


@pytest.fixture
def here(inputs, tmp_path, monkeypatch) -> Path:
    """A copy of the inputs as the current folder (cases name files relative to it)."""
    work = tmp_path / "work"
    shutil.copytree(inputs, work, symlinks=True)
    monkeypatch.chdir(work)
    with h5py.File(work / "lfads_output.h5", "r+") as h5:
        h5.attrs["data_file"] = "d.h5"  # this copy's training file
    return work


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden temporaries included) and its SHA-256."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def refused(capsys, folder: Path, *argv: object) -> str:
    """Run a command that must be refused: exit 2, one line, no traceback, and `folder` exactly as it was."""
    before = snapshot(folder)
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("autolfads: error: ") and "\n" not in err and "Traceback" not in err, err
    assert snapshot(folder) == before, "an input was changed or something was left behind"
    return err.removeprefix("autolfads: error: ")


SPIKE_FILES = ["--spikes", "spikes.csv", "--trials", "trials.csv", "--units", "units.csv"]
EXPORT = ["export-nwb", "--output", "lfads_output.h5", "--nwb", "s.nwb"]
EVALUATE = ["evaluate", "--output", "lfads_output.h5", "--targets", "d_targets.h5"]

# (command line, what the one line must say): outputs that are inputs, or another output, of the same command.
OVERWRITES = {
    "nwb --out NWB": (
        ["data", "nwb", "--nwb", "s.nwb", *SESSION, "--out", "s.nwb"],
        "--out s.nwb is the input --nwb s.nwb: writing it would overwrite that input; choose another --out",
    ),
    "nwb --targets NWB": (
        ["data", "nwb", "--nwb", "s.nwb", *SESSION, "--out", "new.h5", "--targets", "s.nwb"],
        "--targets s.nwb is the input --nwb s.nwb",
    ),
    "nwb --out through ..": (
        ["data", "nwb", "--nwb", "s.nwb", *SESSION, "--out", "run/../s.nwb"],
        "--out run/../s.nwb is the input --nwb s.nwb (the same file through a symlink or '..')",
    ),
    "nwb --out a symlink": (
        ["data", "nwb", "--nwb", "s.nwb", *SESSION, "--out", "link.nwb"],
        "--out link.nwb is the input --nwb s.nwb (the same file through a symlink or '..')",
    ),
    "nwb --out a hard link": (
        ["data", "nwb", "--nwb", "s.nwb", *SESSION, "--out", "hard.nwb"],
        "--out hard.nwb is the input --nwb s.nwb (a hard link to the same file)",
    ),
    "nwb --targets = --out": (
        ["data", "nwb", "--nwb", "s.nwb", *SESSION, "--out", "x.h5", "--targets", "x.h5"],
        "--targets x.h5 is also --out x.h5: this command would write both into one file",
    ),
    "nlb --out NWB": (
        ["data", "nlb", "--dataset", "mc_maze_small", "--nwb", "s.nwb", "--out", "s.nwb"],
        "--out s.nwb is the input --nwb s.nwb",
    ),
    "nlb --targets a --nwb folder's file": (
        ["data", "nlb", "--dataset", "mc_maze_small", "--nwb", ".", "--out", "new.h5", "--targets", "s.nwb"],
        "--targets s.nwb is the input --nwb ",  # the folder's first *.nwb that is s.nwb: hard.nwb, a hard link
    ),
    "nlb --out a tensor file": (
        ["data", "nlb", "--dataset", "mc_maze_small", "--tensors", "d.h5", "--out", "d.h5"],
        "--out d.h5 is the input --tensors d.h5",
    ),
    "nlb default targets = --eval-targets": (
        ["data", "nlb", "--dataset", "mc_maze_small", "--tensors", "lorenz.h5", "--eval-targets", "d_targets.h5"]
        + ["--out", "d.h5"],
        "--targets d_targets.h5 is the input --eval-targets d_targets.h5",
    ),
    "spikes --out the spikes CSV": (
        ["data", "spikes", *SPIKE_FILES, *SESSION, "--out", "spikes.csv"],
        "--out spikes.csv is the input --spikes spikes.csv",
    ),
    "spikes --out the trials CSV": (
        ["data", "spikes", *SPIKE_FILES, *SESSION, "--out", "trials.csv"],
        "--out trials.csv is the input --trials trials.csv",
    ),
    "spikes --targets the units CSV": (
        ["data", "spikes", *SPIKE_FILES, *SESSION, "--out", "new.h5", "--targets", "units.csv"],
        "--targets units.csv is the input --units units.csv",
    ),
    "spikes --targets X --out X": (
        ["data", "spikes", *SPIKE_FILES, *SESSION, "--out", "x.h5", "--targets", "x.h5"],
        "--targets x.h5 is also --out x.h5",
    ),
    "chop --out its input": (
        ["data", "chop", "--input", "rec.h5", "--key", "data", "--window", "20", "--out", "rec.h5"],
        "--out rec.h5 is the input --input rec.h5",
    ),
    "merge --out the chops": (
        ["data", "merge", "--output", "lfads_output.h5", "--chops", "chops.h5", "--out", "chops.h5"],
        "--out chops.h5 is the input --chops chops.h5",
    ),
    "merge --out the output": (
        ["data", "merge", "--output", "lfads_output.h5", "--chops", "chops.h5", "--out", "lfads_output.h5"],
        "--out lfads_output.h5 is the input --output lfads_output.h5",
    ),
    "evaluate --nlb-submission the output": (
        [*EVALUATE, "--nlb-submission", "lfads_output.h5"],
        "--nlb-submission lfads_output.h5 is the input --output lfads_output.h5",
    ),
    "evaluate --json the targets": (
        [*EVALUATE, "--json", "d_targets.h5"],
        "--json d_targets.h5 is the input --targets d_targets.h5",
    ),
    "evaluate --json = --nlb-submission": (
        [*EVALUATE, "--json", "x.h5", "--nlb-submission", "x.h5"],
        "--nlb-submission x.h5 is also --json x.h5",
    ),
    "export-nwb --out the session": (
        [*EXPORT, "--out", "s.nwb"],
        "--out s.nwb is the input --nwb s.nwb",
    ),
    "export-nwb --out the training file": (
        [*EXPORT, "--out", "d.h5"],
        "--out d.h5 is the input --data d.h5",
    ),
    "export-nwb --out the output": (
        [*EXPORT, "--out", "lfads_output.h5"],
        "--out lfads_output.h5 is the input --output lfads_output.h5",
    ),
    "export-nwb --out the config": (
        [*EXPORT, "--config", "config.yaml", "--out", "config.yaml"],
        "--out config.yaml is the input --config config.yaml",
    ),
    "report -o its metrics.csv": (
        ["report", "run", "-o", "run/metrics.csv"],
        "-o run/metrics.csv is the input metrics.csv of RUN_DIR run/metrics.csv",
    ),
    "report -o its output": (
        ["report", "run", "-o", "run/lfads_output.h5"],
        "-o run/lfads_output.h5 is the input lfads_output.h5 of RUN_DIR",
    ),
    "sample --output the data": (
        ["sample", "--checkpoint", "run", "--data", "lorenz.h5", "--output", "lorenz.h5"],
        "--output lorenz.h5 is the input --data lorenz.h5",
    ),
    "sample --output the checkpoint": (
        ["sample", "--checkpoint", "run", "--data", "lorenz.h5", "--output", "run/best.ckpt"],
        "--output run/best.ckpt is the input the checkpoint run/best.ckpt",
    ),
    "train writes over its --data": (
        ["train", "--data", "run/train.log", "--checkpoint", "run", "--quiet", "--no-report", "--epochs", "1"],
        "--checkpoint's train.log run/train.log is the input --data run/train.log",
    ),
}


@pytest.mark.parametrize("argv, message", OVERWRITES.values(), ids=OVERWRITES.keys())
def test_no_command_writes_over_its_inputs(here, capsys, argv, message):
    (here / "link.nwb").symlink_to(here / "s.nwb")
    os.link(here / "s.nwb", here / "hard.nwb")
    if argv[0] == "train":  # a data file where the run keeps its log: the run would write over it
        shutil.copy(here / "lorenz.h5", here / "run" / "train.log")
    assert message in refused(capsys, here, *argv)


def test_a_command_still_writes_beside_its_inputs(here, capsys):
    """The check refuses only the same file: the neighbours the refused cases almost named are written."""
    assert main(["data", "nwb", "--nwb", "s.nwb", *SESSION, "--out", "s2.h5", "--targets", "s2_t.h5"]) == 0
    assert main([*EXPORT, "--out", "copy.nwb"]) == 0
    assert (here / "s2.h5").is_file() and (here / "s2_t.h5").is_file() and (here / "copy.nwb").is_file()


# ------------------------------------------------------------------ export-nwb: only into the data's session


def export_refused(capsys, folder: Path, nwb: Path) -> str:
    return refused(capsys, folder, "export-nwb", "--output", "lfads_output.h5", "--nwb", nwb, "--out", "new.nwb")


def test_export_into_a_session_with_more_units_is_refused(here, capsys):
    more = write_session_nwb(here / "more.nwb", spikes={**SPIKES, 4: np.array([0.7]), 5: np.array([1.7])})
    message = export_refused(capsys, here, more)
    assert message.startswith(f"{more} is not the session d.h5 was made from: number of units (4 in d.h5, 6 in ")
    assert message.endswith("; unit ids; spike times differ; export into that session (or a copy of it)")


def test_export_into_another_session_of_the_same_shape_is_refused(here, capsys):
    shifted = {unit: times + 0.0001 for unit, times in SPIKES.items()}
    other = write_session_nwb(here / "other.nwb", spikes=shifted, observed_until=None)
    message = export_refused(capsys, here, other)
    assert message.endswith("spike times differ; export into that session (or a copy of it)")
    assert "number of units" not in message and "trial" not in message


def test_export_into_a_session_with_other_trial_times_is_refused(here, capsys):
    write_session_nwb(here / "t.nwb", observed_until=None)
    with h5py.File(here / "t.nwb", "r+") as h5:
        h5["intervals/trials/stop_time"][-1] = 5.9  # still after the trial's window: only the identity tells
    assert "trial ids or start/stop times differ" in export_refused(capsys, here, here / "t.nwb")


def test_export_of_an_output_made_from_other_data_is_refused(here, capsys):
    with h5py.File(here / "lfads_output.h5", "r+") as h5:
        h5.attrs["session_spikes_sha256"] = "0" * 64  # as carried over from another session's training file
    message = export_refused(capsys, here, here / "s.nwb")
    assert message.startswith("lfads_output.h5 was made from another session than ") and "spike times" in message


def test_export_of_data_made_before_identities_says_what_it_checked(here, capsys):
    with h5py.File(here / "d.h5", "r+") as h5:
        for key in [key for key in h5.attrs if key.startswith("session_")]:
            del h5.attrs[key]
    assert main([*EXPORT, "--out", "copy.nwb"]) == 0
    assert "records no identity of its session" in capsys.readouterr().err
    more = write_session_nwb(here / "more.nwb", spikes={**SPIKES, 4: np.array([0.7])})
    message = export_refused(capsys, here, more)
    assert message.startswith(f"{more} has 5 units but ") and "was made from a session of 4" in message


def test_sample_carries_the_session_identity_into_the_output(inputs):
    """The training file of `data nwb` records the session; lfads_output.h5 of `sample` carries it on."""
    with h5py.File(inputs / "d.h5") as h5:
        recorded = {key: h5.attrs[key] for key in h5.attrs if key.startswith("session_")}
    assert recorded["session_identifier"] == "sessions-test"
    assert recorded["session_units"] == 4 and recorded["session_trials"] == 6
    with h5py.File(inputs / "run" / "lfads_output.h5") as h5, h5py.File(inputs / "lorenz.h5") as data:
        assert "session_units" not in data.attrs and "session_units" not in h5.attrs  # synthetic: no session
    from autolfads.data.identity import read_identity

    assert read_identity(inputs / "d.h5") == recorded


EXPORT_FAULTS = {
    "--nwb a text file": (["--nwb", "spikes.csv", "--out", "new.nwb"], "spikes.csv: cannot read as an NWB file"),
    "--nwb HDF5, not NWB": (["--nwb", "lorenz.h5", "--out", "new.nwb"], "lorenz.h5: cannot read as an NWB file"),
    "--out unwritable": (["--nwb", "s.nwb", "--out", "/proc/x.nwb"], "cannot write /proc/x.nwb: "),
    "--config invalid YAML": (
        ["--nwb", "s.nwb", "--config", "bad.yaml", "--out", "new.nwb"],
        "bad.yaml: invalid YAML at line 3, column 1",
    ),
}


@pytest.mark.parametrize("argv, message", EXPORT_FAULTS.values(), ids=EXPORT_FAULTS.keys())
def test_export_faults_are_one_line(here, capsys, argv, message):
    (here / "bad.yaml").write_text("model:\n  fac_dim: [3\n")
    assert message in refused(capsys, here, "export-nwb", "--output", "lfads_output.h5", *argv)


# ------------------------------------------------------------------ data spikes: the right file, row and unit


def spikes_refused(capsys, folder: Path, *options: object) -> str:
    return refused(capsys, folder, "data", "spikes", *options, *OPTIONS, "--out", "new.h5")


def test_a_binary_spike_file_is_one_line(here, capsys):
    message = spikes_refused(capsys, here, "--spikes", "lorenz.h5", "--trials", "trials.csv")
    assert message.startswith("lorenz.h5: not a text CSV file (") and "expected comma-separated text" in message
    (here / "bad.npz").write_bytes(b"not a zip")
    message = spikes_refused(capsys, here, "--spikes", "bad.npz", "--trials", "trials.csv")
    assert message.startswith("bad.npz: cannot read as an NPZ file")


@pytest.mark.parametrize("column, option", [("go", "--align"), ("start", "trial start")])
def test_a_non_numeric_time_is_reported_with_its_row(here, capsys, column, option):
    lines = (here / "trials.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = lines[4].split(",")  # row 3, counting data rows from 0
    row[header.index(column)] = "soon"
    (here / "trials.csv").write_text("\n".join([*lines[:4], ",".join(row), *lines[5:]]) + "\n")
    message = spikes_refused(capsys, here, "--spikes", "spikes.csv", "--trials", "trials.csv")
    name = "start_time" if column == "start" else column
    assert message == (
        f"trials.csv: trials column {name!r} ({option}) must hold times in seconds, but row 3 (counting from 0) "
        "holds 'soon'"
    )


def test_a_bad_heldout_value_names_the_units_csv_and_unit(here, capsys):
    (here / "units.csv").write_text("unit,heldout\n10,false\n11,true\n12,maybe\n13,false\n")
    message = spikes_refused(capsys, here, *SPIKE_FILES, "--heldout-column", "heldout")
    assert message == "units.csv: units column 'heldout' must be boolean (held out or not), but unit 12 has 'maybe'"


def test_a_missing_heldout_column_names_the_units_csv(here, capsys):
    message = spikes_refused(capsys, here, *SPIKE_FILES, "--heldout-column", "quality")
    assert message == "units.csv: the units table has no column 'quality' (--heldout-column); it has: heldout"
    message = spikes_refused(
        capsys, here, "--spikes", "spikes.csv", "--trials", "trials.csv", "--heldout-column", "heldout"
    )
    assert message.startswith("--heldout-column heldout reads a units table, and none was given: add --units FILE")


def test_a_trial_without_a_stop_time_is_refused_not_a_file_of_nan(here, capsys):
    lines = (here / "trials.csv").read_text().splitlines()
    row = lines[3].split(",")  # trial 2
    row[1] = ""
    (here / "trials.csv").write_text("\n".join([*lines[:3], ",".join(row), *lines[4:]]) + "\n")
    message = spikes_refused(capsys, here, "--spikes", "spikes.csv", "--trials", "trials.csv")
    assert message.startswith("trials.csv: trial 2 has stop_time nan, and 1 trials in all have no finite stop_time")


# ------------------------------------------------------------------ data that cannot train: refused at load


def lfads_file(path: Path, train: np.ndarray, valid: np.ndarray) -> Path:
    with h5py.File(path, "w") as h5:
        h5["train_data"], h5["valid_data"] = train, valid
    return path


def counts(dtype=np.int64, value=None) -> np.ndarray:
    data = np.random.default_rng(0).poisson(1.0, size=(8, 10, 5)).astype(dtype)
    if value is not None:
        data[2, 3, 1] = value
    return data


LOAD_FAULTS = {
    "int64 counts of 1e9": (
        counts(value=10**9),
        [],
        "'train_data' holds 1 counts above 2**24 = 16777216, the largest float32 holds exactly, e.g. "
        "train_data[2, 3, 1] = 1000000000: are these spike counts per bin?",
    ),
    "float32 counts of 1e9": (counts(np.float32, 1e9), [], "e.g. train_data[2, 3, 1] = 1000000000.0"),
    "all zeros": (np.zeros((8, 10, 5)), [], "'train_data' holds nothing but zeros: there is nothing to learn"),
    "a trial of nothing but NaN": (
        counts(np.float32) * np.where(np.arange(8) == 5, np.nan, 1.0)[:, None, None],
        ["train.sbtt", "true"],
        "'train_data' has 1 trials with no observed entry (all NaN), e.g. trial row 5; leave such trials out",
    ),
}


@pytest.mark.parametrize("train, options, message", LOAD_FAULTS.values(), ids=LOAD_FAULTS.keys())
def test_data_that_cannot_train_is_refused_before_any_epoch(tmp_path, capsys, train, options, message):
    data = lfads_file(tmp_path / "d.h5", train, counts())
    argv = ["train", "--data", data, "--checkpoint", tmp_path / "run", "--quiet", *tiny_overrides(), *options]
    assert message in refused(capsys, tmp_path, *argv)
    assert not (tmp_path / "run" / "last.ckpt").exists()


def test_the_load_checks_pass_data_at_their_limits(tmp_path):
    """2**24 is still exact, and one zero split is fine when test (only sampled): the checks stop at their edge."""
    train = counts(value=2**24)
    with h5py.File(lfads_file(tmp_path / "d.h5", train, counts()), "r+") as h5:
        h5["test_data"] = np.zeros((2, 10, 5))
    arrays = hdf5.read_lfads_h5(tmp_path / "d.h5")
    assert arrays.splits["train"].recon[2, 3, 1] == 2**24 and not arrays.splits["test"].recon.any()
    assert hdf5.read_lfads_h5(tmp_path / "d.h5", reconstruction="gaussian").splits["train"].recon.max() == 2**24


# ------------------------------------------------------------------ a full disk


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    def full(self, name, data=None, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", full)
    message = refused(capsys, tmp_path, "data", "lorenz", "--out", tmp_path / "l.h5", *TINY_DATA_ARGS)
    assert message == f"cannot write {tmp_path / 'l.h5'}: [Errno 28] No space left on device"
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs mounted at tmp_path/disk; skipped where mounting is not permitted (not root, containers)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip() or 'mount failed'}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_real_full_disk_is_one_line_without_traceback_or_crash(small_disk):
    """`data lorenz` bigger than the disk, in a fresh process: h5py's errors at close must not crash it."""
    argv = ["data", "lorenz", "--out", small_disk / "l.h5", "--n-conditions", "40", "--n-neurons", "200"]
    result = subprocess.run(cli_command(*argv), capture_output=True, text=True, env=cli_env(), timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"autolfads: error: cannot write {small_disk / 'l.h5'}: ")
    assert "No space left on device" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert list(small_disk.iterdir()) == []
