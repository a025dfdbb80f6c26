"""`export-nwb`: the results back in a copy of the session, read back with pynwb, checked by nwbinspector."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("pynwb", reason="NWB tests need pynwb: pip install pynwb")
from pynwb import NWBHDF5IO  # noqa: E402

from autolfads.cli import main  # noqa: E402
from test_data_nwb import GO, SHARED_NWB, write_session_nwb  # noqa: E402


def fake_output(folder: Path, data: Path) -> dict[str, np.ndarray]:
    """An LFADS output for every trial of `data`, with rates that name their trial, bin and unit."""
    arrays = {}
    with h5py.File(data) as h5:
        for split in ("train", "valid", "test"):
            if f"{split}_inds" not in h5:
                continue
            trials, bins, units = h5[f"{split}_recon_data"].shape
            ids = h5[f"{split}_inds"][()]
            grid = np.meshgrid(ids, np.arange(bins), np.arange(units), indexing="ij")
            arrays[f"{split}_rates"] = (1 + grid[0] * 100 + grid[1] * 10 + grid[2]) / 1000  # expected counts per bin
            arrays[f"{split}_factors"] = np.random.default_rng(0).normal(size=(trials, bins, 3))
            arrays[f"{split}_gen_inputs"] = np.random.default_rng(1).normal(size=(trials, bins, 1))
            arrays[f"{split}_inds"] = ids
    with h5py.File(folder / "lfads_output.h5", "w") as h5:
        for key, value in arrays.items():
            h5[key] = value
        h5.attrs["data_file"] = str(data)
    (folder / "config.yaml").write_text("model:\n  fac_dim: 3\n")
    return arrays


def inspect_messages(path: Path) -> list:
    nwbinspector = pytest.importorskip(
        "nwbinspector", reason="validating NWB files needs nwbinspector: pip install nwbinspector"
    )
    return list(nwbinspector.inspect_nwbfile(nwbfile_path=str(path)))


def test_results_round_trip_through_pynwb_and_pass_nwbinspector(tmp_path, capsys):
    nwb = write_session_nwb(tmp_path / "s.nwb", observed_until=None, subject=True)
    argv = [
        "data",
        "nwb",
        "--nwb",
        nwb,
        "--align",
        "go",
        "--window",
        "0",
        "40",
        "--bin-ms",
        "10",
        "--forward-ms",
        "20",
        "--split-column",
        "split",
        "--heldout-column",
        "heldout",
        "--out",
        tmp_path / "d.h5",
    ]
    assert main([str(a) for a in argv]) == 0
    arrays = fake_output(tmp_path, tmp_path / "d.h5")
    assert (
        main(
            [
                "export-nwb",
                "--output",
                str(tmp_path / "lfads_output.h5"),
                "--nwb",
                str(nwb),
                "--out",
                str(tmp_path / "out.nwb"),
            ]
        )
        == 0
    )
    with NWBHDF5IO(str(tmp_path / "out.nwb"), "r") as io:
        f = io.read()
        module = f.processing["lfads"]
        rates, factors, inputs, trials = (
            module["rates"],
            module["factors"],
            module["inferred_inputs"],
            module["trials"].to_dataframe(),
        )
        assert "fac_dim: 3" in module.description
        assert len(f.units) == 4 and list(f.trials["go"][:]) == list(GO)  # the session itself is copied
        # 6 trials (ids 0-5, time order) x 4 trial bins (forward bins left out), at the bin centres
        np.testing.assert_allclose(rates.timestamps[:], (GO[:, None] + [0.005, 0.015, 0.025, 0.035]).reshape(-1))
        assert rates.unit == "Hz" and rates.data.shape == (24, 4)
        # columns in the Units table's order (ids 10..13); the training file held unit 11 out, last
        trial, bin_, column = 3, 2, 1  # trial 3 is a valid trial; Units column 1 = unit 11 = column 3 of the data
        expected = (1 + trial * 100 + bin_ * 10 + 3) / 1000 / 0.010
        assert rates.data[trial * 4 + bin_, column] == pytest.approx(expected)
        row = list(arrays["valid_inds"]).index(trial)
        np.testing.assert_allclose(factors.data[trial * 4 : trial * 4 + 4], arrays["valid_factors"][row, :4])
        np.testing.assert_allclose(inputs.data[trial * 4 : trial * 4 + 4], arrays["valid_gen_inputs"][row, :4])
        assert trials["trial_id"].tolist() == list(range(6)) and trials["split"].tolist() == ["train"] * 3 + [
            "valid"
        ] * 2 + ["test"]
        np.testing.assert_allclose(trials["start_time"], GO)
    serious = [
        m
        for m in inspect_messages(tmp_path / "out.nwb")
        if m.importance.name in ("CRITICAL", "ERROR", "PYNWB_VALIDATION")
    ]
    assert not serious, serious
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary file left


def test_another_session_is_refused_and_nothing_written(tmp_path, capsys):
    nwb = write_session_nwb(tmp_path / "s.nwb", observed_until=None)
    argv = [
        "data",
        "nwb",
        "--nwb",
        nwb,
        "--align",
        "go",
        "--window",
        "0",
        "40",
        "--bin-ms",
        "10",
        "--out",
        tmp_path / "d.h5",
    ]
    assert main([str(a) for a in argv]) == 0
    fake_output(tmp_path, tmp_path / "d.h5")
    shifted = dict(enumerate([np.array([0.1, 0.2])] * 4))
    other = write_session_nwb(tmp_path / "other.nwb", spikes=shifted, trials=False)
    capsys.readouterr()
    assert (
        main(
            [
                "export-nwb",
                "--output",
                str(tmp_path / "lfads_output.h5"),
                "--nwb",
                str(other),
                "--out",
                str(tmp_path / "out.nwb"),
            ]
        )
        == 2
    )
    assert "the session has no trials table; export-nwb places trial results by it" in capsys.readouterr().err
    assert not (tmp_path / "out.nwb").exists()
    assert (
        main(["export-nwb", "--output", str(tmp_path / "lfads_output.h5"), "--nwb", str(nwb), "--out", str(nwb)]) == 2
    )
    assert f"--out {nwb} is the input --nwb {nwb}: writing it would overwrite that input" in capsys.readouterr().err


@pytest.mark.skipif(
    not SHARED_NWB.is_file(),
    reason=f"the shared real MC_Maze_Small file is not here ({SHARED_NWB}; a user's clone has no ../shared: "
    "set AUTOLFADS_SHARED_DATA)",
)
def test_export_into_the_real_mc_maze_small_session_adds_no_inspector_issue(tmp_path):
    argv = [
        "data",
        "nwb",
        "--nwb",
        SHARED_NWB,
        "--align",
        "move_onset_time",
        "--window",
        "-250",
        "450",
        "--bin-ms",
        "5",
        "--heldout-fraction",
        "0.2",
        "--out",
        tmp_path / "d.h5",
    ]
    assert main([str(a) for a in argv]) == 0
    fake_output(tmp_path, tmp_path / "d.h5")
    assert (
        main(
            [
                "export-nwb",
                "--output",
                str(tmp_path / "lfads_output.h5"),
                "--nwb",
                str(SHARED_NWB),
                "--out",
                str(tmp_path / "out.nwb"),
            ]
        )
        == 0
    )
    with NWBHDF5IO(str(tmp_path / "out.nwb"), "r") as io:
        assert io.read().processing["lfads"]["rates"].data.shape == (100 * 140, 107)

    def issues(path):
        return {(m.check_function_name, m.object_type, m.object_name) for m in inspect_messages(path)}

    added = issues(tmp_path / "out.nwb") - issues(SHARED_NWB)
    # the one addition is the advice to name the module after NWB's schema modules (ecephys, behavior, misc...)
    assert added == {("check_processing_module_name", "ProcessingModule", "lfads")}, added


@pytest.mark.slow
def test_any_nwb_session_trains_evaluates_and_goes_back_into_nwb(autolfads, tiny_model, tmp_path):
    """The whole way on a session in NLB's layout, read as any NWB: its split and heldout columns, forward bins and
    hand velocity; a tiny model trains; evaluate scores what the targets hold; export-nwb writes the results."""
    from autolfads.data.nlb_synthetic import write_nlb_synthetic

    nwb, _ = write_nlb_synthetic(tmp_path / "session.nwb", conditions=4, trials_per_condition=8, heldin=20, heldout=6)
    result = autolfads("data", "nwb", "--nwb", nwb, "--align", "move_onset_time", "--window", "-250", "450",
                       "--bin-ms", "20", "--forward-ms", "200", "--split-column", "split",
                       "--heldout-column", "heldout", "--condition-column", "trial_type", "--behavior", "hand_vel",
                       "--out", tmp_path / "d.h5")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        "train 24 / valid 4 / test 4 trials, 35+10 bins of 20 ms (-250..450 ms around move_onset_time), 20+6 units"
        in result.stdout
    )
    result = autolfads(
        "train",
        "--data",
        tmp_path / "d.h5",
        "--checkpoint",
        tmp_path / "run",
        "--quiet",
        "--no-report",
        *tiny_model(train__max_epochs=2),
    )
    assert result.returncode == 0, result.stderr
    result = autolfads(
        "evaluate", "--output", tmp_path / "run" / "lfads_output.h5", "--targets", tmp_path / "d_targets.h5"
    )
    assert result.returncode == 0, result.stderr
    assert "| co-bps | vel R2 | fp-bps |" in result.stdout and "not available" not in result.stdout
    result = autolfads(
        "export-nwb", "--output", tmp_path / "run" / "lfads_output.h5", "--nwb", nwb, "--out", tmp_path / "out.nwb"
    )
    assert result.returncode == 0, result.stderr
    with NWBHDF5IO(str(tmp_path / "out.nwb"), "r") as io:
        module = io.read().processing["lfads"]
        assert module["rates"].data.shape == (32 * 35, 26) and "fac_dim" in module.description
        with h5py.File(tmp_path / "run" / "lfads_output.h5") as h5:
            first = int(np.argmin(h5["train_inds"][()]))  # trial 0 comes first in time
            np.testing.assert_allclose(module["factors"].data[:35], h5["train_factors"][first, :35], rtol=1e-6)

    # the synthetic session's own spike trains have repeated times (critical for nwbinspector); the export adds
    # nothing serious
    def serious(path):
        return {
            (m.check_function_name, m.object_name)
            for m in inspect_messages(path)
            if m.importance.name in ("CRITICAL", "ERROR", "PYNWB_VALIDATION")
        }

    assert serious(tmp_path / "out.nwb") == serious(nwb)
