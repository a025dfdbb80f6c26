"""Bad input to the commands (issue 27, items 4-6): every case exits non-zero with one line that names the option,
file or value at fault, shows no traceback, leaves nothing behind, and the corrected command then works; bad
search settings, YAML configs and overrides, and kubeflow options are named in our words.

The commands that do not train run in-process (`autolfads.cli.main`); the few that must start training use the
tiny Lorenz set and model of conftest.py. The data commands' cases are in tests/test_cli_data_bad_input.py.
"""

from __future__ import annotations

import csv
import errno
import importlib.abc
import sys
from pathlib import Path

import pytest

from autolfads.cli import main
from conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[1]


LORENZ_CONFIG = REPO / "examples" / "configs" / "lorenz.yaml"


def files_under(folder: Path) -> set[Path]:
    """Every file and folder under `folder` (empty if it does not exist)."""
    return set(folder.rglob("*")) if folder.exists() else set()


def refused(argv: list, capsys, subject: str, status: int = 2) -> str:
    """Run `autolfads ARGV`; assert it fails with one line naming `subject` (after any notes) and no traceback;
    returns the line."""
    assert main([str(item) for item in argv]) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if not line.startswith("autolfads: note: ")]  # notes may precede it
    assert len(lines) == 1 and lines[0].startswith("autolfads: ") and err.endswith("\n"), err
    assert subject in lines[0], err
    return lines[0]


def succeeds(argv: list, capsys) -> str:
    assert main([str(item) for item in argv]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


# ------------------------------------------------------------------------------------------------------ kubeflow

KATIB = ["kubeflow", "katib", "--name", "lorenz", "--image", "ghcr.io/lab/autolfads:0.1.0", "--data-pvc", "data",
         "--config-file", LORENZ_CONFIG, "--population", "8", "--epochs-per-generation", "5"]  # fmt: skip


RAYJOB = ["kubeflow", "rayjob", "--name", "lorenz-ray", "--image", "ghcr.io/lab/autolfads:0.1.0-ray", "--pvc", "share",
          "--config-file", LORENZ_CONFIG, "--population", "8", "--epochs-per-generation", "5"]  # fmt: skip


def replaced(argv: list, option: str, value: str) -> list:
    """argv with `option`'s value replaced, or the option added."""
    if option in argv:
        at = argv.index(option) + 1
        return [*argv[:at], value, *argv[at + 1 :]]
    return [*argv, option, value]


@pytest.mark.parametrize(
    "base, option, bad, good, subject",
    [
        (KATIB, "--memory", "lots", "4Gi", "--memory 'lots': expected a Kubernetes quantity"),
        (KATIB, "--memory", "4XB", "4G", "--memory '4XB': expected a Kubernetes quantity"),
        (KATIB, "--memory", "512m", "512Mi", "'m' means thousandths of a byte; did you mean 512Mi?"),
        (KATIB, "--memory", "0Gi", "1Gi", "--memory '0Gi': must be more than 0"),
        (KATIB, "--data-pvc", "PVC_1", "pvc-1", "--data-pvc 'PVC_1': a PersistentVolumeClaim name is lower-case"),
        (KATIB, "--namespace", "Bad_NS", "bad-ns", "--namespace 'Bad_NS': a namespace is lower-case"),
        (KATIB, "--image", "", "ghcr.io/lab/autolfads:0.1.0", "--image '': give an image reference"),
        (KATIB, "--image", "lab/autolfads 0.1", "lab/autolfads:0.1", "--image 'lab/autolfads 0.1'"),
        (KATIB, "--data-subpath", "../lorenz", "lorenz", "--data-subpath '../lorenz': a path inside the volume"),
        (KATIB, "--gpus", "-1", "1", "--gpus must be >= 0"),
        (RAYJOB, "--memory-per-worker", "4XB", "4Gi", "--memory-per-worker '4XB': expected a Kubernetes quantity"),
        (RAYJOB, "--pvc", "PVC_1", "pvc.1", "--pvc 'PVC_1': a PersistentVolumeClaim name"),
        (RAYJOB, "--namespace", "Bad_NS", "lab", "--namespace 'Bad_NS'"),
        (RAYJOB, "--image", "", "lab/autolfads:ray", "--image ''"),
        (RAYJOB, "--workdir-subpath", "/runs/x", "runs/x", "--workdir-subpath '/runs/x': a path inside the volume"),
        (RAYJOB, "--gpus-per-worker", "-1", "0", "--gpus-per-worker must be >= 0, got -1"),
        (RAYJOB, "--gpus-per-member", "-1", "0", "--gpus-per-member must be >= 0, got -1"),
        (RAYJOB, "--gpus-per-trial", "-0.5", "0", "--gpus-per-trial must be >= 0, got -0.5"),
        (RAYJOB, "--cpus-per-worker", "0", "4", "--cpus-per-worker must be > 0, got 0"),
        (RAYJOB, "--workers", "0", "1", "--workers must be >= 1, got 0"),
    ],
)
def test_kubeflow_refuses_what_kubernetes_would(base, option, bad, good, subject, tmp_path, capsys):
    manifest = tmp_path / "manifest.yaml"
    argv = [*base, "-o", manifest]
    refused(replaced(argv, option, bad), capsys, subject)
    assert files_under(tmp_path) == set()
    succeeds(replaced(argv, option, good), capsys)
    assert manifest.is_file()


class BlockImports(importlib.abc.MetaPathFinder):
    """Makes `import kubeflow` / `import kubernetes` fail, as if the packages were not installed."""

    def __init__(self, *packages: str):
        self.packages = packages

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.packages:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


KUBERNETES_PACKAGES = ("kubeflow", "kubernetes")


def uninstall_kubernetes_packages(monkeypatch) -> None:
    """The kubernetes client and the Katib SDK made unimportable until `monkeypatch` undoes it."""
    for name in [name for name in sys.modules if name.split(".")[0] in KUBERNETES_PACKAGES]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [BlockImports(*KUBERNETES_PACKAGES), *sys.meta_path])


@pytest.fixture
def no_kubernetes_packages(monkeypatch):
    uninstall_kubernetes_packages(monkeypatch)


def test_katib_yaml_needs_no_sdk_and_is_the_same_without_it(tmp_path, capsys, monkeypatch):
    with_sdk, without_sdk = tmp_path / "with.yaml", tmp_path / "without.yaml"
    succeeds([*KATIB, "-o", with_sdk], capsys)
    with monkeypatch.context() as patch:
        uninstall_kubernetes_packages(patch)
        succeeds([*KATIB, "-o", without_sdk], capsys)
        assert not any(name.split(".")[0] in KUBERNETES_PACKAGES for name in sys.modules)
    assert without_sdk.read_text() == with_sdk.read_text()


def test_submit_without_the_kubernetes_client_names_the_extra(tmp_path, capsys, no_kubernetes_packages):
    manifest = tmp_path / "x.yaml"
    refused(
        [*KATIB, "-o", manifest, "--submit"],
        capsys,
        "--submit needs the kubernetes client: pip install 'autolfads[kubeflow]'",
    )
    assert files_under(tmp_path) == set()


def test_submit_without_a_kube_config_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    pytest.importorskip("kubernetes", reason="--submit's kube config is read by the kubernetes client")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    manifest = tmp_path / "out" / "x.yaml"
    for base in (KATIB, RAYJOB):
        refused([*base, "-o", manifest, "--submit"], capsys, "--submit: no usable kube config (")
    assert files_under(tmp_path) == set()


# --------------------------------------------------------------------------------------------- errors and --debug


def failing_report(error: Exception):
    def write_report(folder, output=None):
        raise error

    return write_report


@pytest.mark.parametrize(
    "error, line, status",
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/data/runs/report.html"),
            "autolfads: error: /data/runs/report.html: No space left on device (ENOSPC)",
            2,
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "/data/runs"),
            "autolfads: error: /data/runs: Permission denied (EACCES)",
            2,
        ),
        (
            RuntimeError("something no input should cause"),
            "autolfads: internal error: RuntimeError: something no input should cause (a bug: please report it",
            1,
        ),
    ],
)
def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(
    error, line, status, tmp_path, capsys, monkeypatch
):
    import autolfads.report.build

    monkeypatch.setattr(autolfads.report.build, "write_report", failing_report(error))
    monkeypatch.delenv("AUTOLFADS_DEBUG", raising=False)
    assert refused(["report", tmp_path], capsys, line, status).startswith(line)
    for argv, env in (
        (["--debug", "report", tmp_path], "0"),
        (["report", tmp_path, "--debug"], "0"),
        (["report", tmp_path], "1"),
    ):
        monkeypatch.setenv("AUTOLFADS_DEBUG", env)
        assert main([str(item) for item in argv]) == status
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):"), err
        assert err.splitlines()[-1].startswith(line), err  # the traceback, then the same line
        assert "in write_report" in err


# --------------------------------------------------------------------------------------------------------- report


@pytest.fixture(scope="module")
def trained(tmp_path_factory, lorenz_file) -> Path:
    """A run folder of the tiny model after two epochs, with its output (shared: copy before changing it)."""
    folder = tmp_path_factory.mktemp("run") / "run"
    argv = ["train", "--data", lorenz_file, "--checkpoint", folder, "--epochs", "2", "--output", "--no-report",
            "--quiet", *tiny_overrides()]  # fmt: skip
    assert main([str(item) for item in argv]) == 0
    return folder


def copy_of(folder: Path, to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, to))


BAD_METRICS = {
    "": "metrics.csv is empty",
    "epoch,member,val_loss\n": "metrics.csv has no rows",
    "loss\n1.0\n": "metrics.csv has no column epoch, member",
    "epoch,member,val_loss\n0,0,1.5\n1,0\n": "metrics.csv, line 3: the row has fewer cells than the header",
    "epoch,member,val_loss\n0,0,1.5,7\n": "metrics.csv, line 2: the row has more cells than the header",
    "epoch,member,val_loss\n0,0,lots\n": "metrics.csv, line 2: val_loss is 'lots', not a number",
}


def test_report_on_a_bad_metrics_table_is_one_line(trained, tmp_path, capsys):
    run = copy_of(trained, tmp_path / "run")
    good = (run / "metrics.csv").read_text()
    for text, subject in BAD_METRICS.items():
        (run / "metrics.csv").write_text(text)
        before = files_under(run)
        refused(["report", run], capsys, f"{run / subject}")
        assert files_under(run) == before
    (run / "metrics.csv").write_text(good)
    assert succeeds(["report", run], capsys).strip() == str(run / "report.html")


# ---------------------------------------------------------------------------------------------------------- train


@pytest.mark.parametrize(
    "data, extra, subject",
    [
        ("missing.h5", [], "missing.h5"),
        (None, ["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (None, ["model.gen_dim", "-5"], "model.gen_dim"),
        (None, ["model.data_dim", "7"], "model.data_dim is 7 in the config"),
        (None, ["model.ic_enc_seq_len", "50"], "model.ic_enc_seq_len (50)"),
    ],
)
def test_train_refused_leaves_no_checkpoint_folder(data, extra, subject, lorenz_file, tmp_path, capsys):
    run = tmp_path / "runs" / "lorenz"
    config = tmp_path / "config.yaml"  # a config file: no sizing from the data (and its note)
    config.write_text("train: {device: cpu}\n")
    argv = ["train", "--data", tmp_path / data if data else lorenz_file, "--checkpoint", run, "--config-file", config]
    refused([*argv, "--quiet", "--no-report", *tiny_overrides(), *extra], capsys, subject)
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------------------------------------- sample


@pytest.mark.parametrize("count", ["0", "-3"])
def test_sample_refuses_a_count_below_one(count, trained, tmp_path, capsys):
    output = tmp_path / "rates.h5"
    refused(
        ["sample", "--checkpoint", trained, "--output", output, "--num-samples", count],
        capsys,
        f"--num-samples must be >= 1, got {count}",
    )
    assert files_under(tmp_path) == set()
    succeeds(["sample", "--checkpoint", trained, "--output", output, "--num-samples", "2"], capsys)
    assert output.is_file()


# --------------------------------------------------------------------------------------------------------- search


def search_argv(data: Path, workdir: Path, *extra: object) -> list:
    """A tiny embedded search in this process: 2 members, 1-epoch generations, 1 generation. (A config file,
    even an empty one, keeps the model the overrides say: no sizing from the data.)"""
    config = workdir.parent / "search_config.yaml"
    config.write_text("train: {device: cpu}\n")
    return ["search", "--data", data, "--workdir", workdir, "--config-file", config, "--population", "2",
            "--epochs-per-generation", "1", "--max-generations", "1", "--workers", "1", "--no-report", *extra,
            *tiny_overrides(train__max_epochs=100)]  # fmt: skip


@pytest.mark.parametrize(
    "extra, space, subject",
    [
        (
            [],
            "dropout_rate: {low: 0.0, high: 1.5}\n",
            "dropout_rate.high 1.5 is outside what model.dropout_rate allows",
        ),
        ([], "cd_rate: {low: 0.1, high: 0.5, enforce_limits: false}\n", "cd_rate: enforce_limits false"),
        ([], "lr_init: {low: 0, high: 0.01}\n", "lr_init.low 0 is outside what train.lr_init allows (> 0)"),
        (["--workers", "0"], None, "--workers"),
        (["--workers", "-1"], None, "--workers"),
        (["--workers", "3"], None, "--workers"),
        (["--threads-per-worker", "0"], None, "--threads-per-worker"),
        (["--threads-per-worker", "-1"], None, "--threads-per-worker"),
        (["--epochs-per-generation", "0"], None, "--epochs-per-generation"),
        (["--max-generations", "0"], None, "--max-generations"),
    ],
)
def test_search_refuses_bad_options_before_writing_anything(extra, space, subject, lorenz_file, tmp_path, capsys):
    workdir = tmp_path / "search"
    if space is not None:
        (tmp_path / "space.yaml").write_text(space)
        extra = [*extra, "--search-space", tmp_path / "space.yaml"]
    refused(search_argv(lorenz_file, workdir, *extra), capsys, subject)
    assert not workdir.exists()


def state_tables(workdir: Path) -> tuple[str, str]:
    return (workdir / "state.csv").read_text(), (workdir / "exploits.csv").read_text()


@pytest.mark.slow
def test_search_reruns_failed_starts_names_differences_and_goes_on_past_max_generations(lorenz_file, tmp_path, capsys):
    workdir = tmp_path / "search"
    # What a start that failed before training leaves (an older version wrote these first): not a search yet.
    workdir.mkdir()
    (workdir / "search.yaml").write_text("population: 5\nepochs_per_generation: 3\n")
    (workdir / "config.yaml").write_text("model: {gen_dim: 99}\n")
    succeeds(search_argv(lorenz_file, workdir), capsys)
    assert "population: 2" in (workdir / "search.yaml").read_text()

    files = {path: path.stat().st_mtime_ns for path in files_under(workdir)}
    line = refused(
        [*search_argv(lorenz_file, workdir, "--population", "3", "--seed", "4"), "model.gen_dim", "12"],
        capsys,
        f"{workdir} holds a search with different settings: --population: 2 -> 3; --seed: 0 -> 4; ",
    )
    assert "model.gen_dim: 16 -> 12" in line
    space = tmp_path / "space.yaml"
    space.write_text("dropout_rate: {low: 0.0, high: 0.5}\n")
    line = refused(search_argv(lorenz_file, workdir, "--search-space", space), capsys, "search space dropout_rate.high")
    assert "search space lr_init: {" in line  # searched before, not now
    assert {path: path.stat().st_mtime_ns for path in files_under(workdir)} == files  # nothing touched

    # Raising --max-generations continues the finished search as if it had never stopped; lowering is refused.
    succeeds([*search_argv(lorenz_file, workdir), "--max-generations", "2"], capsys)
    refused([*search_argv(lorenz_file, workdir), "--max-generations", "1"], capsys, "--max-generations: 2 -> 1")
    straight = tmp_path / "straight"
    succeeds([*search_argv(lorenz_file, straight), "--max-generations", "2"], capsys)
    assert state_tables(workdir) == state_tables(straight)
    with open(workdir / "state.csv", newline="") as f:
        assert {row["generation"] for row in csv.DictReader(f)} == {"0", "1"}


def test_bad_search_settings_name_the_option_in_our_words(tmp_path, capsys):
    assert (
        main(
            [
                "search",
                "--data",
                str(tmp_path / "missing.h5"),
                "--workdir",
                str(tmp_path / "search"),
                "--population",
                "1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "invalid search settings: --population: Input should be greater than or equal to 2 (got 1)" in err
    assert "pydantic" not in err


@pytest.mark.parametrize(
    "text, where",
    [
        ("model: [1, 2\n", "at line 2, column 1: expected ',' or ']'"),
        ("model:\n  gen_dim: 1\n   ic_dim: 2\n", "at line 3, column 10: mapping values are not allowed here"),
        ('model: {gen_dim: "16}\n', "at line 2, column 1: found unexpected end of stream"),
    ],
)
def test_bad_yaml_config_is_one_line_with_where(text, where, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    argv = ["train", "--data", str(tmp_path / "missing.h5"), "--checkpoint", str(tmp_path / "run")]
    assert main([*argv, "--config-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"autolfads: error: {path}: invalid YAML {where}") and err.count("\n") == 1, err


def test_bad_yaml_override_is_one_line_naming_the_key(tmp_path, capsys):
    argv = ["train", "--data", str(tmp_path / "missing.h5"), "--checkpoint", str(tmp_path / "run")]
    assert main([*argv, "model.gen_dim", "[16,"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autolfads: error: command-line overrides: model.gen_dim: cannot parse '[16,' as YAML at ")
    assert err.count("\n") == 1, err


def test_bad_kubeflow_options_are_one_line_naming_them(tmp_path, capsys):
    lorenz = Path(__file__).parents[1] / "examples" / "configs" / "lorenz.yaml"
    argv = ["kubeflow", "katib", "--name", "Lorenz", "--image", "i", "--data-pvc", "d", "--config-file", str(lorenz)]
    assert main([*argv, "--population", "8", "--epochs-per-generation", "0", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autolfads: error: --name 'Lorenz': use lower-case letters") and err.count("\n") == 1, err
    assert "--epochs-per-generation must be >= 1, got 0" in err
