"""data/multisession_synthetic.py: multi-session synthetic data. Determinism, shapes, shared latents per
condition, the Lorenz rate range, the files and the `data multisession` command."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from autolfads.cli import main
from autolfads.data.dataset import load_data
from autolfads.data.multisession_synthetic import make_multisession, write_multisession
from autolfads.errors import ConfigError

# 6 conditions x 5 trials (4 train + 1 valid per condition), 20 bins: every test stays well under a second.
SESSIONS = {
    "n_sessions": 3,
    "neurons_per_session": "4,5,6",
    "n_conditions": 6,
    "trials_per_condition": 5,
    "seq_len": 20,
    "valid_fraction": 0.2,
}


SPLITS = ("train", "valid")


def latents_by_condition(arrays: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    return {
        int(c): latents
        for split in SPLITS
        for c, latents in zip(arrays[f"{split}_cond_idx"], arrays[f"{split}_latents"])
    }


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        return {key: h5[key][()] for key in h5}


# ---------------------------------------------------------------- multi-session


def test_multisession_same_seed_same_sessions_other_seed_other_sessions() -> None:
    first, again, other = (
        make_multisession(seed=3, **SESSIONS),
        make_multisession(seed=3, **SESSIONS),
        make_multisession(seed=4, **SESSIONS),
    )
    assert len(first) == len(again) == len(other) == 3
    for session, repeat, different in zip(first, again, other):
        assert session.keys() == repeat.keys()
        for key in session:
            np.testing.assert_array_equal(session[key], repeat[key])
        for key in ("train_data", "train_truth", "train_latents", "train_inds"):
            assert not np.array_equal(session[key], different[key]), key


def test_multisession_shapes_neuron_counts_and_keys() -> None:
    sessions = make_multisession(**SESSIONS)
    for session, n_neurons in zip(sessions, (4, 5, 6)):
        for split, n_trials in (("train", 6 * 4), ("valid", 6 * 1)):
            data = session[f"{split}_data"]
            assert data.shape == (n_trials, 20, n_neurons) and np.issubdtype(data.dtype, np.integer)
            assert session[f"{split}_truth"].shape == data.shape and session[f"{split}_truth"].dtype == np.float32
            assert session[f"{split}_latents"].shape == (n_trials, 20, 3)
            assert session[f"{split}_cond_idx"].shape == (n_trials,) and session[f"{split}_inds"].shape == (n_trials,)
        assert float(session["conversion_factor"]) == 1000.0 / 20.0
    # One count applies to every session.
    assert [s["train_data"].shape[2] for s in make_multisession(**{**SESSIONS, "neurons_per_session": "7"})] == [
        7,
        7,
        7,
    ]
    assert [s["train_data"].shape[2] for s in make_multisession(**{**SESSIONS, "neurons_per_session": (3, 8, 2)})] == [
        3,
        8,
        2,
    ]


def test_sessions_share_latents_per_condition_but_not_neurons_or_trials() -> None:
    sessions = make_multisession(**{**SESSIONS, "neurons_per_session": "5"})
    latents = [latents_by_condition(session) for session in sessions]
    assert all(set(session) == set(range(6)) for session in latents)  # same condition ids in every session
    for condition in range(6):
        for other in latents[1:]:
            np.testing.assert_array_equal(other[condition], latents[0][condition])
    # Same neuron count, yet each session reads the latents out through its own neurons and draws its own trials.
    first, second = sessions[0], sessions[1]
    assert not np.allclose(
        first["train_truth"][first["train_cond_idx"] == 0][0], second["train_truth"][second["train_cond_idx"] == 0][0]
    )
    assert not np.array_equal(first["train_inds"], second["train_inds"])
    assert not np.array_equal(first["train_data"], second["train_data"])


def test_adding_a_session_leaves_the_others_unchanged() -> None:
    two = make_multisession(**{**SESSIONS, "n_sessions": 2, "neurons_per_session": "4,5"})
    three = make_multisession(**SESSIONS)
    for small, large in zip(two, three):
        for key in small:
            np.testing.assert_array_equal(small[key], large[key])


def test_multisession_rates_follow_the_lorenz_rate_range() -> None:
    for session in make_multisession(**SESSIONS, min_rate_hz=2.0, max_rate_hz=80.0):
        rates = np.concatenate([session["train_truth"], session["valid_truth"]])
        np.testing.assert_allclose(rates.min(axis=(0, 1)), 2.0, rtol=1e-5)
        np.testing.assert_allclose(rates.max(axis=(0, 1)), 80.0, rtol=1e-5)


def test_multisession_files_load_and_document_themselves(tmp_path: Path) -> None:
    out = tmp_path / "new" / "sessions"
    paths = write_multisession(out, seed=5, **SESSIONS)
    assert [p.name for p in paths] == ["session_00.h5", "session_01.h5", "session_02.h5"]
    assert sorted(p.name for p in out.iterdir()) == [
        "session_00.h5",
        "session_01.h5",
        "session_02.h5",
    ]  # no temporaries
    for index, (path, arrays) in enumerate(zip(paths, make_multisession(seed=5, **SESSIONS))):
        data = load_data(path)
        assert data.train.recon.shape[2] == (4, 5, 6)[index]
        np.testing.assert_array_equal(data.valid.recon.numpy(), arrays["valid_data"])
        np.testing.assert_allclose(
            data.train.truth.numpy(), arrays["train_truth"] / arrays["conversion_factor"], rtol=1e-6
        )
        stored = read_arrays(path)
        for key in arrays:
            np.testing.assert_array_equal(stored[key], arrays[key])
        with h5py.File(path, "r") as h5:
            assert h5.attrs["synthetic_kind"] == "multisession"
            assert h5.attrs["session_index"] == index and h5.attrs["n_sessions"] == 3
            assert json.loads(h5.attrs["synthetic_params"])["seed"] == 5


def test_multisession_refuses_a_folder_with_more_sessions(tmp_path: Path) -> None:
    write_multisession(tmp_path, **SESSIONS)
    before = (tmp_path / "session_00.h5").read_bytes()
    with pytest.raises(ConfigError, match="session_02.h5.*another --out folder"):
        write_multisession(tmp_path, **{**SESSIONS, "n_sessions": 2, "neurons_per_session": "4,5"}, seed=1)
    assert (tmp_path / "session_00.h5").read_bytes() == before
    write_multisession(tmp_path, **SESSIONS, seed=1)  # the same number of sessions replaces them


def test_multisession_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sessions"
    args = [
        "--n-sessions",
        "2",
        "--neurons-per-session",
        "3,4",
        "--n-conditions",
        "4",
        "--trials-per-condition",
        "4",
        "--seq-len",
        "10",
        "--seed",
        "2",
    ]
    assert main(["data", "multisession", "--out", str(out), *args]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out), str(out / "session_00.h5"), str(out / "session_01.h5")]
    expected = make_multisession(
        n_sessions=2, neurons_per_session="3,4", n_conditions=4, trials_per_condition=4, seq_len=10, seed=2
    )
    for index, arrays in enumerate(expected):
        np.testing.assert_array_equal(read_arrays(out / f"session_{index:02d}.h5")["train_data"], arrays["train_data"])


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"n_sessions": 0}, r"n_sessions \(--n-sessions\) must be >= 1, got 0"),
        ({"neurons_per_session": "4,5"}, r"--neurons-per-session\) gives 2 neuron counts for n_sessions=3"),
        ({"neurons_per_session": "4,five,6"}, r"--neurons-per-session\) must be comma-separated whole neuron counts"),
        ({"neurons_per_session": "4,0,6"}, r"--neurons-per-session\) must be counts >= 1"),
        ({"trials_per_condition": 1}, "validation trials per condition"),
        ({"max_rate_hz": 0.5}, "min_rate_hz < max_rate_hz"),
    ],
)
def test_bad_multisession_parameters_are_config_errors(changes: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        make_multisession(**{**SESSIONS, **changes})


def test_bad_multisession_option_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "multisession", "--out", str(tmp_path / "s"), "--n-sessions", "2"]) != 0
    assert "--neurons-per-session" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
