"""Continuous recordings: chop into overlapping trials, merge posterior outputs back (issue 8, part 2)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from autolfads.cli import main
from autolfads.data.continuous import blend_weights, chop, chop_starts, make_continuous, merge
from autolfads.data.dataset import load_data
from autolfads.data.hdf5 import write_lfads_h5
from autolfads.errors import ConfigError, DataError


def recording(n_bins=203, n_neurons=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n_bins, n_neurons))


@pytest.mark.parametrize(
    "n_bins, window, overlap", [(203, 40, 10), (200, 40, 0), (200, 50, 25), (41, 40, 20), (40, 40, 5)]
)
@pytest.mark.parametrize("ramp", ["linear", "power"])
def test_chop_merge_round_trip_is_exact(n_bins, window, overlap, ramp):
    data = recording(n_bins)
    segments, starts = chop(data, window, overlap)
    assert segments.shape == (len(starts), window, 4) and starts[0] == 0 and starts[-1] + window == n_bins
    np.testing.assert_array_equal(np.diff(starts)[:-1], window - overlap)
    for segment, start in zip(segments, starts):
        np.testing.assert_array_equal(segment, data[start : start + window])
    np.testing.assert_allclose(merge(segments, starts, n_bins, ramp), data, rtol=0, atol=1e-12)


def test_blending_is_exact_on_the_interior_and_between_neighbours_in_overlaps():
    data = recording(160)
    window, overlap = 40, 10
    segments, starts = chop(data, window, overlap)
    noisy = segments + np.random.default_rng(1).normal(scale=0.01, size=segments.shape)
    for ramp in ("linear", "power"):
        merged = merge(noisy, starts, 160, ramp)
        covered = np.zeros(160, int)
        for s in starts:
            covered[s : s + window] += 1
        for t in np.flatnonzero(covered == 1):  # interior: exactly the one segment's value
            (i,) = [k for k, s in enumerate(starts) if s <= t < s + window]
            np.testing.assert_array_equal(merged[t], noisy[i, t - starts[i]])
        for t in np.flatnonzero(covered == 2):  # overlaps: between the two segments' values, close to the truth
            i, j = [k for k, s in enumerate(starts) if s <= t < s + window]
            a, b = noisy[i, t - starts[i]], noisy[j, t - starts[j]]
            assert np.all(merged[t] >= np.minimum(a, b) - 1e-12) and np.all(merged[t] <= np.maximum(a, b) + 1e-12)
        np.testing.assert_allclose(merged, data, atol=0.05)


def test_blend_weights_ramp_across_the_overlap_and_sum_to_one():
    starts = chop_starts(70, 40, 10)
    np.testing.assert_array_equal(starts, [0, 30])
    linear = blend_weights(starts, 40)
    np.testing.assert_allclose(linear[1, :10], (np.arange(10) + 0.5) / 10)
    np.testing.assert_allclose(linear[0, 30:] + linear[1, :10], 1.0)
    assert np.all(np.diff(linear[0, 30:]) < 0) and np.all(linear[0, :30] == 1)
    power = blend_weights(starts, 40, "power", 3.0)
    np.testing.assert_allclose(power[0, 30:] + power[1, :10], 1.0)
    assert power[1, 0] < linear[1, 0] and power[1, 9] > linear[1, 9]  # flatter at the ends


def test_bad_windows_are_clear_errors():
    with pytest.raises(ConfigError, match=r"overlap \(21 bins\) must be at most half the window \(40 bins\)"):
        chop(recording(), 40, 21)
    with pytest.raises(DataError, match=r"window \(300 bins\) is longer than the recording \(203 bins\)"):
        chop(recording(), 300, 10)
    with pytest.raises(DataError, match="2-D"):
        chop(np.zeros((3, 4, 5)), 2, 0)
    with pytest.raises(ConfigError, match="window must be >= 1"):
        chop(recording(), 0, 0)


def test_synthetic_continuous_recording_is_deterministic():
    a, b, c = (
        make_continuous(n_bins=300, n_neurons=5, seed=2),
        make_continuous(n_bins=300, n_neurons=5, seed=2),
        make_continuous(n_bins=300, n_neurons=5, seed=3),
    )
    assert a["data"].shape == a["truth"].shape == (300, 5) and a["latents"].shape == (300, 3)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["data"], c["data"])
    assert a["data"].dtype == np.int32 and np.all(a["truth"] > 0)


def test_cli_chop_then_merge_an_output_in_process(tmp_path, capsys):
    rec, chops, merged = tmp_path / "rec.h5", tmp_path / "chops.h5", tmp_path / "merged.h5"
    assert main(["data", "continuous", "--out", str(rec), "--n-bins", "330", "--n-neurons", "6", "--seed", "1"]) == 0
    assert (
        main(
            [
                "data",
                "chop",
                "--input",
                str(rec),
                "--key",
                "data",
                "--window",
                "40",
                "--overlap",
                "10",
                "--out",
                str(chops),
                "--seed",
                "3",
            ]
        )
        == 0
    )
    data = load_data(chops)  # an ordinary LFADS training file
    assert data.train.recon.shape[1:] == (40, 6) and data.train.truth is not None
    with h5py.File(rec) as h5:
        truth = h5["truth"][()]
    with h5py.File(chops) as h5:
        starts, inds = h5["chop_starts"][()], {name: h5[f"{name}_inds"][()] for name in ("train", "valid")}
        assert h5.attrs["chop_n_bins"] == 330 and len(inds["valid"]) == round(0.2 * len(starts))
        assert sorted(np.concatenate(list(inds.values()))) == list(range(len(starts)))
    # a fake LFADS output: the true rates (plus noise) of each segment, and a per-trial field that is skipped
    noise = np.random.default_rng(0)
    arrays = {}
    for name, split_inds in inds.items():
        arrays[f"{name}_rates"] = np.stack([truth[starts[i] : starts[i] + 40] for i in split_inds]) + noise.normal(
            scale=1e-3, size=(len(split_inds), 40, 6)
        )
        arrays[f"{name}_factors"] = np.stack([truth[starts[i] : starts[i] + 40, :2] for i in split_inds])
        arrays[f"{name}_ic_mean"] = np.zeros((len(split_inds), 3))
        arrays[f"{name}_inds"] = split_inds
    write_lfads_h5(tmp_path / "out.h5", arrays)
    assert (
        main(
            [
                "data",
                "merge",
                "--output",
                str(tmp_path / "out.h5"),
                "--chops",
                str(chops),
                "--out",
                str(merged),
                "--ramp",
                "power",
            ]
        )
        == 0
    )
    with h5py.File(merged) as h5:
        assert set(h5.keys()) == {"rates", "factors"}
        assert h5["rates"].shape == (330, 6)
        np.testing.assert_allclose(h5["rates"][()], truth, atol=5e-3)
        np.testing.assert_allclose(h5["factors"][()], truth[:, :2], atol=1e-6)
    capsys.readouterr()
    assert main(["data", "chop", "--input", str(rec), "--key", "data", "--window", "400", "--out", str(chops)]) == 2
    assert "longer than the recording" in capsys.readouterr().err
    assert (
        main(
            [
                "data",
                "chop",
                "--input",
                str(rec),
                "--key",
                "data",
                "--window",
                "40",
                "--overlap",
                "30",
                "--out",
                str(chops),
            ]
        )
        == 2
    )
    assert "at most half the window" in capsys.readouterr().err
    assert main(["data", "chop", "--input", str(rec), "--key", "nope", "--window", "40", "--out", str(chops)]) == 2
    assert "no key 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_chop_train_merge_end_to_end(autolfads, tiny_model, tmp_path):
    rec, chops, run, merged = tmp_path / "rec.h5", tmp_path / "chops.h5", tmp_path / "run", tmp_path / "merged.h5"
    assert autolfads("data", "continuous", "--out", rec, "--n-bins", 600, "--n-neurons", 8, "--seed", 1).returncode == 0
    assert (
        autolfads(
            "data", "chop", "--input", rec, "--key", "data", "--window", 30, "--overlap", 6, "--out", chops
        ).returncode
        == 0
    )
    result = autolfads("train", "--data", chops, "--checkpoint", run, "--no-report", *tiny_model(train__num_samples=2))
    assert result.returncode == 0, result.stderr
    result = autolfads("data", "merge", "--output", run / "lfads_output.h5", "--chops", chops, "--out", merged)
    assert result.returncode == 0, result.stderr
    with h5py.File(merged) as h5:
        assert h5["rates"].shape == (600, 8) and np.isfinite(h5["rates"][()]).all()
        assert h5["factors"].shape[0] == 600
