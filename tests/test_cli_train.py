"""End-to-end `autolfads train` and `sample`: the command line in a subprocess, on a tiny Lorenz set and a tiny
model.

Covers a full training run (Katib metric lines, every file of the run folder, the output file), `sample`,
PBT-style generations (`--epochs N` twice, with a new hyperparameter the second time), an lfads-tf2 YAML, and
bad input: exit code 2, one `autolfads: error: ...` line, never a traceback."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

try:
    from conftest import TINY_DATA_SHAPE, TINY_MODEL
except ImportError:  # pytest --import-mode=importlib
    from tests.conftest import TINY_DATA_SHAPE, TINY_MODEL


pytestmark = pytest.mark.slow


# Katib's StdOut metrics collector: the default filter of a Katib Experiment's metricsCollectorSpec.
KATIB_REGEX = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")


KATIB_METRICS = ("smth_val_nll_heldin", "val_nll_heldin", "loss", "epoch")


OUTPUT_FIELDS = (
    "rates", "factors", "gen_states", "gen_inputs", "gen_init",
    "con_states", "ic_mean", "ic_std", "co_means", "co_stds",
)  # fmt: skip


OUTPUT_KEYS = {f"{split}_{field}" for split in ("train", "valid") for field in (*OUTPUT_FIELDS, "inds")}


N_EPOCHS = TINY_MODEL["train.max_epochs"]


def read_metrics(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def katib_values(stdout: str) -> dict[str, list[float]]:
    """What Katib's collector reads from stdout: every `name=value` line, values in order. Every line holding
    a `=` must be exactly one `name=number` (anything else would feed Katib a wrong or empty metric)."""
    values: dict[str, list[float]] = {}
    for line in stdout.splitlines():
        if "=" not in line:
            continue
        match = KATIB_REGEX.fullmatch(line.strip())
        assert match is not None, f"stdout line Katib cannot parse: {line!r}"
        name, value = match.group(1), match.group(2)
        assert value not in ("", "+", "-", "."), f"no number in {line!r}"
        values.setdefault(name, []).append(float(value))
    return values


def assert_cli_error(result, *expected: str, usage: bool = False) -> str:
    """Exit code 2, no traceback, and one `autolfads: error: ...` line naming each of `expected`."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("autolfads: error: ")]
    assert len(errors) == 1, result.stderr
    assert lines[-1] == errors[0], f"the error is not the last line of stderr:\n{result.stderr}"
    if not usage:  # argparse errors come after a usage line; ours come alone
        assert len(lines) == 1, f"expected a one-line error, got:\n{result.stderr}"
    for text in expected:
        assert text in errors[0], f"{text!r} not in {errors[0]!r}"
    return errors[0]


@pytest.fixture(scope="module")
def trained_run(autolfads, tiny_model, lorenz_file, tmp_path_factory):
    """One complete `autolfads train` run (3 epochs). Tests read it; ones that change it work on a copy."""
    folder = tmp_path_factory.mktemp("run") / "lorenz"
    result = autolfads("train", "--data", lorenz_file, "--checkpoint", folder, *tiny_model())
    return result, folder


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(trained_run[1], copy)
    return copy


# --- a complete training run -------------------------------------------------------------------------------------


def test_train_exits_zero_and_writes_every_run_file(trained_run):
    result, folder = trained_run
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for name in ("config.yaml", "last.ckpt", "best.ckpt", "metrics.csv", "train.log", "lfads_output.h5"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    assert not list(folder.glob(".*.tmp")), "temporary files left behind"
    log = (folder / "train.log").read_text()
    assert "new run" in log and f"complete after {N_EPOCHS} epochs" in log


def test_stdout_has_katib_metric_lines_once_per_epoch(trained_run):
    result, folder = trained_run
    values = katib_values(result.stdout)
    for name in KATIB_METRICS:
        assert len(values[name]) == N_EPOCHS, (name, values.get(name))
    assert values["epoch"] == list(range(N_EPOCHS))
    rows = read_metrics(folder)
    for name in ("smth_val_nll_heldin", "val_nll_heldin", "loss"):
        printed, saved = values[name], [float(row[name]) for row in rows]
        assert printed == pytest.approx(saved, rel=1e-5), name  # printed with 6 significant digits
        assert all(np.isfinite(printed)), name
    # the smoothed metric starts at the raw one and stays between it and the previous smoothed value
    smth, raw = values["smth_val_nll_heldin"], values["val_nll_heldin"]
    assert smth[0] == pytest.approx(raw[0], rel=1e-5)
    for epoch in range(1, N_EPOCHS):
        low, high = sorted((smth[epoch - 1], raw[epoch]))
        assert low * (1 - 1e-5) <= smth[epoch] <= high * (1 + 1e-5)


def test_config_yaml_is_resolved_from_the_data(trained_run, lorenz_file):
    _, folder = trained_run
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    model = saved["model"]
    assert model["data_dim"] == TINY_DATA_SHAPE["n_neurons"]
    assert model["seq_len"] == TINY_DATA_SHAPE["seq_len"]
    assert model["ext_input_dim"] == 0 and model["cs_dim"] == 0 and model["fp_len"] == 0
    for key, value in TINY_MODEL.items():
        section, field = key.split(".")
        assert saved[section][field] == value, key
    assert Path(saved["data"]["dir"]) == lorenz_file.resolve()


def test_metrics_csv_has_one_row_per_epoch(trained_run):
    _, folder = trained_run
    rows = read_metrics(folder)
    assert [int(row["epoch"]) for row in rows] == list(range(N_EPOCHS))
    assert {row["member"] for row in rows} == {"0"}
    for row in rows:
        for name in ("loss", "val_nll_heldin", "smth_val_nll_heldin", "lr", "kl_ramp", "l2_ramp"):
            assert np.isfinite(float(row[name])), name
        assert float(row["lr"]) == pytest.approx(TINY_MODEL["train.lr_init"])  # no schedule
    # kl_increase_epoch / l2_increase_epoch 1: the ramps never decrease and are full by the last epoch
    for ramp in ("kl_ramp", "l2_ramp"):
        values = [float(row[ramp]) for row in rows]
        assert all(0 < v <= 1 for v in values) and values == sorted(values) and values[-1] == 1.0, (ramp, values)


def test_tensorboard_holds_the_epoch_scalars(trained_run):
    _, folder = trained_run
    events = list((folder / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder / "tensorboard"))
    accumulator.Reload()
    scalars = accumulator.Scalars("val_nll_heldin")
    assert [s.step for s in scalars] == list(range(N_EPOCHS))
    saved = [float(row["val_nll_heldin"]) for row in read_metrics(folder)]
    assert [s.value for s in scalars] == pytest.approx(saved, rel=1e-6)


def test_output_file_has_every_field_with_the_right_shapes(trained_run, lorenz_file):
    _, folder = trained_run
    n_t, n_n = TINY_DATA_SHAPE["seq_len"], TINY_DATA_SHAPE["n_neurons"]
    m = {key.split(".")[1]: value for key, value in TINY_MODEL.items()}
    with h5py.File(folder / "lfads_output.h5", "r") as out, h5py.File(lorenz_file, "r") as data:
        assert set(out.keys()) >= OUTPUT_KEYS, OUTPUT_KEYS - set(out.keys())
        for split in ("train", "valid"):
            n = TINY_DATA_SHAPE[f"n_{split}"]
            expected = {
                "rates": (n, n_t, n_n),
                "factors": (n, n_t, m["fac_dim"]),
                "gen_states": (n, n_t, m["gen_dim"]),
                "gen_inputs": (n, n_t, m["co_dim"]),
                "gen_init": (n, m["gen_dim"]),
                "con_states": (n, n_t, m["con_dim"]),
                "ic_mean": (n, m["ic_dim"]),
                "ic_std": (n, m["ic_dim"]),
                "co_means": (n, n_t, m["co_dim"]),
                "co_stds": (n, n_t, m["co_dim"]),
            }
            for field, shape in expected.items():
                array = out[f"{split}_{field}"][()]
                assert array.shape == shape, (split, field, array.shape)
                assert np.all(np.isfinite(array)), (split, field)
            rates = out[f"{split}_rates"][()]
            assert np.all(rates > 0)
            # counts per bin, the scale of the data (not Hz): the mean is within a factor of 3 of the data's
            mean_count = float(data[f"{split}_data"][()].mean())
            assert mean_count / 3 < float(rates.mean()) < mean_count * 3
            assert np.all(out[f"{split}_ic_std"][()] > 0) and np.all(out[f"{split}_co_stds"][()] > 0)
            np.testing.assert_array_equal(out[f"{split}_inds"][()], data[f"{split}_inds"][()])
        assert int(out.attrs["num_samples"]) == TINY_MODEL["train.num_samples"]
        assert Path(out.attrs["checkpoint"]).name == "best.ckpt" and 0 <= int(out.attrs["epoch"]) < N_EPOCHS


def test_sample_writes_the_same_keys(autolfads, trained_run, tmp_path):
    _, folder = trained_run
    path = tmp_path / "sampled.h5"
    result = autolfads("sample", "--checkpoint", folder, "--output", path, "--num-samples", 3)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(path)
    with h5py.File(path, "r") as sampled, h5py.File(folder / "lfads_output.h5", "r") as trained:
        assert set(sampled.keys()) == set(trained.keys())
        assert int(sampled.attrs["num_samples"]) == 3
        for key in sampled:
            assert sampled[key].shape == trained[key].shape, key
        for split in ("train", "valid"):
            # the encoder is deterministic: the posterior means do not depend on the number of samples
            np.testing.assert_allclose(
                sampled[f"{split}_ic_mean"][()], trained[f"{split}_ic_mean"][()], rtol=1e-5, atol=1e-6
            )
            np.testing.assert_array_equal(sampled[f"{split}_inds"][()], trained[f"{split}_inds"][()])
            assert np.all(sampled[f"{split}_rates"][()] > 0)


def test_sample_of_a_missing_folder_is_a_clean_error(autolfads, tmp_path):
    assert_cli_error(autolfads("sample", "--checkpoint", tmp_path / "nothing"), "nothing", "config.yaml")


# --- PBT generations: --epochs N, resume, new hyperparameters ----------------------------------------------------


def test_epochs_trains_exactly_n_more_and_resume_applies_new_overrides(autolfads, tiny_model, lorenz_file, tmp_path):
    folder = tmp_path / "pbt"
    first = autolfads(
        "train", "--data", lorenz_file, "--checkpoint", folder, "--epochs", 2, *tiny_model(train__max_epochs=10)
    )
    assert first.returncode == 0, first.stderr
    assert katib_values(first.stdout)["epoch"] == [0, 1]
    assert [int(row["epoch"]) for row in read_metrics(folder)] == [0, 1]
    assert not (folder / "lfads_output.h5").exists(), "output written although training is not complete"
    checkpoint_after_first = (folder / "last.ckpt").read_bytes()

    # the older tools' container form, without the sub-command, is `train`
    second = autolfads("--data", lorenz_file, "--checkpoint", folder, "--epochs", 2, "TRAIN.LR.INIT", "0.001")
    assert second.returncode == 0, second.stderr
    assert katib_values(second.stdout)["epoch"] == [2, 3]
    rows = read_metrics(folder)
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2, 3]
    assert [float(row["lr"]) for row in rows] == pytest.approx([4e-3, 4e-3, 1e-3, 1e-3])
    assert (folder / "last.ckpt").read_bytes() != checkpoint_after_first
    log = (folder / "train.log").read_text()
    assert f"resumed from {folder / 'last.ckpt'} at epoch 2" in log
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["train"]["lr_init"] == 1e-3
    assert saved["model"]["gen_dim"] == TINY_MODEL["model.gen_dim"]  # the rest comes from the run folder's config
    assert not (folder / "lfads_output.h5").exists()


def test_lfads_tf2_yaml_trains(autolfads, lorenz_file, tmp_path):
    config = tmp_path / "lfads_tf2.yaml"
    config.write_text(
        f"""
MODEL:
  IC_ENC_DIM: 8
  CI_ENC_DIM: 8
  CON_DIM: 8
  CO_DIM: 1
  IC_DIM: 8
  GEN_DIM: 16
  FAC_DIM: 4
  DROPOUT_RATE: 0.1
  CD_RATE: 0.2
TRAIN:
  DATA:
    DIR: {lorenz_file.parent}
    PREFIX: {lorenz_file.stem}
  BATCH_SIZE: 16
  MAX_EPOCHS: 2
  LR:
    INIT: 2.0e-3
    DECAY: 1.0
  KL:
    INCREASE_EPOCH: 1
    IC_WEIGHT: 1.0e-4
    CO_WEIGHT: 1.0e-4
  L2:
    INCREASE_EPOCH: 1
    GEN_SCALE: 1.0e-4
  USE_TB: True
"""
    )
    folder = tmp_path / "tf2"
    result = autolfads(
        "train", "--checkpoint", folder, "--config-file", config, "TRAIN.SEED", "3", "train.num_samples", "2"
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = read_metrics(folder)
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    assert [float(row["lr"]) for row in rows] == pytest.approx([2e-3, 2e-3])
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert (
        saved["model"]["gen_dim"] == 16 and saved["model"]["dropout_rate"] == 0.1 and saved["model"]["cd_rate"] == 0.2
    )
    assert saved["model"]["data_dim"] == TINY_DATA_SHAPE["n_neurons"]
    assert saved["train"]["seed"] == 3 and saved["train"]["lr_schedule"] is False
    assert Path(saved["data"]["dir"]) == lorenz_file.resolve()
    with h5py.File(folder / "lfads_output.h5", "r") as out:
        assert out["train_factors"].shape == (TINY_DATA_SHAPE["n_train"], TINY_DATA_SHAPE["seq_len"], 4)


# --- bad input: exit code 2, one line naming the file or key, no traceback --------------------------------------


def _write_h5(path: Path, **arrays) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value
    return path


def _missing_file(tmp, data):
    return ["--data", tmp / "absent.h5"], ["absent.h5", "does not exist"]


def _not_hdf5(tmp, data):
    path = tmp / "notes.h5"
    path.write_text("these are not spikes\n")
    return ["--data", path], ["notes.h5", "HDF5"]


def _missing_key(tmp, data):
    path = _write_h5(tmp / "half.h5", train_data=np.ones((4, 20, 10), dtype=np.int32))
    return ["--data", path], ["half.h5", "valid_data"]


def _dims_disagree(tmp, data):
    return ["--data", data, "model.data_dim", "99"], ["model.data_dim", "99", "10"]


def _unknown_key(tmp, data):
    return ["--data", data, "model.gen_dimm", "16"], ["model.gen_dimm", "unknown key"]


def _wrong_type(tmp, data):
    return ["--data", data, "train.batch_size", "0.5"], ["train.batch_size", "0.5"]


def _odd_overrides(tmp, data):
    return ["--data", data, "train.batch_size"], ["KEY VALUE", "train.batch_size"]


def _unknown_option(tmp, data):
    return ["--data", data, "--bogus"], ["--bogus"]


def _zero_epochs(tmp, data):
    return ["--data", data, "--epochs", "0"], ["--epochs"]


def _fractional_counts(tmp, data):
    counts = np.full((4, 20, 10), 1.0)
    counts[1, 2, 3] = 0.5
    path = _write_h5(tmp / "rates.h5", train_data=counts, valid_data=np.ones((2, 20, 10)))
    return ["--data", path], ["rates.h5", "train_data", "integer", "[1, 2, 3]"]


def _missing_config_file(tmp, data):
    return ["--data", data, "--config-file", tmp / "absent.yaml"], ["absent.yaml"]


BAD_INPUTS = {
    "missing-data-file": _missing_file,
    "not-hdf5": _not_hdf5,
    "missing-key": _missing_key,
    "dims-disagree": _dims_disagree,
    "unknown-override-key": _unknown_key,
    "override-wrong-type": _wrong_type,
    "odd-override-items": _odd_overrides,
    "unknown-option": _unknown_option,
    "zero-epochs": _zero_epochs,
    "non-integer-poisson-counts": _fractional_counts,
    "missing-config-file": _missing_config_file,
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_is_one_clean_error_line(autolfads, tiny_model, lorenz_file, tmp_path, case):
    args, expected = BAD_INPUTS[case](tmp_path, lorenz_file)
    folder = tmp_path / "run"
    result = autolfads("train", "--checkpoint", folder, *tiny_model(), *args)  # the case's overrides come last
    assert_cli_error(result, *expected, usage=case == "unknown-option")
    assert not (folder / "last.ckpt").exists()


def test_resume_with_a_different_architecture_is_refused(autolfads, lorenz_file, run_copy):
    before = {name: (run_copy / name).read_bytes() for name in ("last.ckpt", "best.ckpt", "metrics.csv", "config.yaml")}
    result = autolfads("train", "--data", lorenz_file, "--checkpoint", run_copy, "model.gen_dim", "32")
    assert_cli_error(result, str(run_copy / "last.ckpt"), "model.gen_dim", "16", "32")
    for name, content in before.items():
        assert (run_copy / name).read_bytes() == content, f"{name} changed by a refused resume"


def test_truncated_last_checkpoint_is_refused(autolfads, lorenz_file, run_copy):
    path = run_copy / "last.ckpt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result = autolfads("train", "--data", lorenz_file, "--checkpoint", run_copy)
    assert_cli_error(result, str(path), "corrupt")
    assert path.stat().st_size > 0  # left for the user to inspect, not overwritten


def test_garbage_last_checkpoint_is_refused_without_traceback(autolfads, lorenz_file, run_copy):
    path = run_copy / "last.ckpt"
    path.write_bytes(b"garbage bytes, not a checkpoint\n" * 8)
    result = autolfads("train", "--data", lorenz_file, "--checkpoint", run_copy)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"autolfads: error: checkpoint {path} cannot be read" in result.stderr
    assert path.read_bytes() == b"garbage bytes, not a checkpoint\n" * 8


def test_garbage_last_checkpoint_error_is_one_line(autolfads, lorenz_file, run_copy):
    path = run_copy / "last.ckpt"
    path.write_bytes(b"garbage bytes, not a checkpoint\n" * 8)
    result = autolfads("train", "--data", lorenz_file, "--checkpoint", run_copy)
    message = assert_cli_error(result, str(path), "corrupt")
    assert "weights_only" not in message


def test_ray_members_per_trial_beyond_the_population_is_one_clean_error(autolfads, tiny_model, lorenz_file, tmp_path):
    pytest.importorskip("ray", exc_type=ImportError)
    result = autolfads(
        "search",
        "--backend",
        "ray",
        "--data",
        lorenz_file,
        "--workdir",
        tmp_path / "search",
        "--population",
        "2",
        "--members-per-trial",
        "3",
        "--no-report",
        *tiny_model(),
    )
    assert_cli_error(result, "--members-per-trial", "between 1 and the population (2)", "got 3")
