"""deploy/katib.py and deploy/katib_rules.py (`autolfads kubeflow katib`): the manifests against Katib's API
types and rules, and the Katib PBT flow emulated locally (parameters substituted as Katib does, the trial command
run, its stdout parsed with Katib's StdOut regex, a child trial resumed from a copy of its parent's folder)."""

from __future__ import annotations

import copy
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from autolfads.cli import build_parser, main
from autolfads.config import load_config
from autolfads.deploy import to_yaml
from autolfads.deploy.katib import (
    DATA_MOUNT,
    METRICS_FORMAT,
    KatibSettings,
    katib_documents,
    katib_parameter,
    log_grid,
    printed_metrics,
)
from autolfads.deploy.katib_rules import check_experiment
from autolfads.errors import ConfigError
from autolfads.layout import KATIB_CHECKPOINT_DIR as CHECKPOINT_DIR
from autolfads.names import MEMBER_HPARAMS
from autolfads.search.space import HyperParameter, default_search_space
from conftest import cli_env, tiny_overrides

REPO = Path(__file__).resolve().parents[1]


SHARED_SCHEMAS = REPO.parent / "shared" / "reference" / "schemas"


LORENZ = REPO / "examples" / "configs" / "lorenz.yaml"


katib = pytest.importorskip("kubeflow.katib", reason="the Katib SDK (pip install -e '.[dev]') builds the Experiment")


def settings(**changes) -> KatibSettings:
    values = dict(
        name="lorenz", image="ghcr.io/lab/autolfads:0.1.0", data_pvc="autolfads-data", data_subpath="lorenz",
        config=load_config(LORENZ), config_text=LORENZ.read_text(), space=default_search_space(),
        population=8, epochs_per_generation=5,
    )  # fmt: skip
    return KatibSettings(**{**values, **changes})


def experiment_of(documents: list[dict]) -> dict:
    (experiment,) = [d for d in documents if d["kind"] == "Experiment"]
    return experiment


@pytest.fixture(scope="module")
def experiment() -> dict:
    return experiment_of(katib_documents(settings()))


# ------------------------------------------------------------------------------------------------ Katib API types


def test_experiment_round_trips_through_the_katib_sdk_models(experiment):
    """Every key is a field of Katib's V1beta1 types with the right type: deserialising into the SDK's
    V1beta1Experiment and serialising again gives back exactly the same document (unknown keys would be lost)."""
    client = katib.ApiClient()
    model = client._ApiClient__deserialize(copy.deepcopy(experiment), "V1beta1Experiment")
    assert isinstance(model, katib.V1beta1Experiment)
    assert client.sanitize_for_serialization(model) == experiment
    assert model.spec.algorithm.algorithm_name == "pbt"
    assert isinstance(model.spec.trial_template.trial_parameters[0], katib.V1beta1TrialParameterSpec)


def test_trial_job_round_trips_through_the_kubernetes_job_model(experiment):
    from kubernetes.client import ApiClient, V1Job

    job = experiment["spec"]["trialTemplate"]["trialSpec"]
    client = ApiClient()
    model = client._ApiClient__deserialize(copy.deepcopy(job), "V1Job")
    assert isinstance(model, V1Job)
    assert client.sanitize_for_serialization(model) == job


def test_experiment_is_what_the_issue_asks_for(experiment):
    spec = experiment["spec"]
    settings_by_name = {s["name"]: s["value"] for s in spec["algorithm"]["algorithmSettings"]}
    assert settings_by_name == {
        "suggestion_trial_dir": CHECKPOINT_DIR,
        "n_population": "8",
        "truncation_threshold": "0.4",
    }
    assert spec["resumePolicy"] == "FromVolume"
    objective = spec["objective"]
    # the objective is train.select_metric (the default: every neuron and bin); the held-in score is printed too
    assert objective["objectiveMetricName"] == "smth_val_nll_all" and objective["type"] == "minimize"
    assert "smth_val_nll_heldin" in objective["additionalMetricNames"]
    assert {s["name"]: s["value"] for s in objective["metricStrategies"]} == dict.fromkeys(
        printed_metrics(load_config(LORENZ)), "latest"
    )
    assert "val_nll_heldin" in objective["additionalMetricNames"] and "val_bps" in objective["additionalMetricNames"]
    assert spec["metricsCollectorSpec"]["collector"]["kind"] == "StdOut"
    assert spec["parallelTrialCount"] == 8 and spec["maxTrialCount"] == 8 * 50
    pod = spec["trialTemplate"]["trialSpec"]["spec"]["template"]
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert (
        pod["spec"]["securityContext"]["runAsNonRoot"] is True and pod["spec"]["securityContext"]["runAsUser"] == 1000
    )
    (container,) = pod["spec"]["containers"]
    assert container["name"] == spec["trialTemplate"]["primaryContainerName"]
    data_mount = next(m for m in container["volumeMounts"] if m["name"] == "data")
    assert data_mount == {"name": "data", "mountPath": DATA_MOUNT, "readOnly": True, "subPath": "lorenz"}
    data_volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "data")
    assert data_volume["persistentVolumeClaim"] == {"claimName": "autolfads-data", "readOnly": True}
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    command = container["command"] + container["args"]
    assert command[:2] == ["autolfads", "train"] and command[command.index("--epochs") + 1] == "5"
    for name in default_search_space().params:
        assert command[command.index(f"{MEMBER_HPARAMS[name]}.{name}") + 1] == f"${{trialParameters.{name}}}"


def test_trial_command_is_accepted_by_the_autolfads_parser(experiment):
    container = experiment["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["autolfads"]
    args, overrides = build_parser().parse_known_args(container["args"])
    assert args.command == "train" and str(args.checkpoint) == CHECKPOINT_DIR and args.epochs == 5
    assert [o for o in overrides if o.startswith("--")] == []


def test_gpus_go_to_the_limits():
    container = experiment_of(katib_documents(settings(gpus=1, cpus=0.5)))["spec"]["trialTemplate"]["trialSpec"][
        "spec"
    ]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["cpu"] == "500m"
    assert container["args"][container["args"].index("train.threads") + 1] == "1"


def test_config_travels_verbatim_in_a_config_map():
    config_map, experiment = katib_documents(settings(namespace="lab"))
    assert config_map["kind"] == "ConfigMap" and config_map["data"]["config.yaml"] == LORENZ.read_text()
    assert config_map["metadata"] == {"name": "lorenz-config", "namespace": "lab"}
    assert experiment["metadata"] == {"name": "lorenz", "namespace": "lab"}
    volumes = experiment["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": "lorenz-config"}} in volumes


def test_yaml_keeps_number_like_strings_strings():
    """Kubernetes' YAML parser reads 1e-05 as a number; Katib's lists and settings are strings."""
    text = to_yaml(katib_documents(settings()))
    assert "- '1e-05'" in text and "value: '8'" in text
    assert (
        yaml.safe_load_all(text) is not None
        and experiment_of(list(yaml.safe_load_all(text)))["spec"]["parameters"][0]["feasibleSpace"]["list"][0]
        == "1e-05"
    )


# ------------------------------------------------------------------------------------------- Katib's offline rules


def test_generated_experiment_passes_katibs_rules(experiment):
    assert check_experiment(experiment, printed_metrics(load_config(LORENZ))) == []


def _break(experiment: dict, change) -> dict:
    broken = copy.deepcopy(experiment)
    change(broken["spec"])
    return broken


def _settings_of(spec: dict) -> dict:
    return {s["name"]: s for s in spec["algorithm"]["algorithmSettings"]}


def _container(spec: dict) -> dict:
    return spec["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]


BROKEN = {
    "n_population": (lambda s: _settings_of(s)["n_population"].update(value="4"), "n_population should be >= 5"),
    "truncation": (
        lambda s: _settings_of(s)["truncation_threshold"].update(value="1.5"),
        "truncation_threshold must lie in [0, 1]",
    ),
    "missing setting": (
        lambda s: s["algorithm"]["algorithmSettings"].pop(0),
        "pbt settings missing: suggestion_trial_dir",
    ),
    "resample": (
        lambda s: s["algorithm"]["algorithmSettings"].append({"name": "resample_probability", "value": "0.5"}),
        "resample_probability must not be set",
    ),
    "min >= max": (
        lambda s: s["parameters"][1]["feasibleSpace"].update(min="0.7", max="0.6"),
        "min (0.7) must be smaller than max (0.6)",
    ),
    "unused trial parameter": (
        lambda s: _container(s)["args"].__setitem__(-1, "0.001"),
        "'kl_ic_weight' is never used",
    ),
    "undeclared placeholder": (
        lambda s: _container(s)["args"].extend(["model.cd_pass_rate", "${trialParameters.cd_pass}"]),
        "placeholders ['cd_pass'] are not declared",
    ),
    "unknown reference": (
        lambda s: s["trialTemplate"]["trialParameters"][0].update(reference="lr"),
        "reference 'lr' is not in spec.parameters",
    ),
    "unprinted objective": (
        lambda s: s["objective"].update(objectiveMetricName="val_accuracy"),
        "['val_accuracy'] are never printed",
    ),
    "objective twice": (
        lambda s: s["objective"]["additionalMetricNames"].append("smth_val_nll_all"),
        "must not contain the objective metric",
    ),
    "resume policy": (lambda s: s.update(resumePolicy="Never"), "resumePolicy must be FromVolume for pbt"),
    "checkpoint dir": (
        lambda s: _container(s)["args"].__setitem__(2, "/tmp/ckpt"),
        "must be pbt's suggestion_trial_dir",
    ),
    "collector": (lambda s: s["metricsCollectorSpec"]["collector"].update(kind="File"), "must be StdOut"),
    "parallel > max": (lambda s: s.update(parallelTrialCount=5000), "parallelTrialCount must be <= spec.maxTrialCount"),
    "restart policy": (
        lambda s: s["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"].update(restartPolicy="Always"),
        "restartPolicy must be Never",
    ),
    "primary container": (
        lambda s: s["trialTemplate"].update(primaryContainerName="main"),
        "'main' names no container",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_katib_rule_catches_its_violation(experiment, case):
    change, message = BROKEN[case]
    problems = check_experiment(_break(experiment, change), printed_metrics(load_config(LORENZ)))
    assert any(message in p for p in problems), problems


def test_experiment_against_the_published_katib_swagger_schema(experiment):
    """Extra check with Katib's own API schema (Swagger 2.0), made strict: unknown keys are errors."""
    path = SHARED_SCHEMAS / "katib-v1beta1-swagger.json"
    if not path.exists():
        pytest.skip(
            f"{path} is not here (a user's clone has no ../shared); the SDK models and Katib's rules above still ran"
        )
    import jsonschema

    swagger = json.loads(path.read_text())
    definitions = swagger["definitions"]
    for name in ("v1.Container", "v1.HTTPGetAction", "v1.ListMeta", "v1.ObjectMeta", "v1.unstructured.Unstructured"):
        definitions.setdefault(name, {"type": "object"})  # Kubernetes' own types: checked by the round trips above
    definitions.setdefault("v1.Time", {"type": "string"})
    for definition in definitions.values():
        if "properties" in definition:
            definition["additionalProperties"] = False
    schema = {"$ref": "#/definitions/v1beta1.Experiment", "definitions": definitions}
    jsonschema.validate(experiment, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_break(experiment, lambda s: s.update(resumePolicyy="FromVolume")), schema)


# -------------------------------------------------------------------------------------- log-scale ranges on Katib


def test_log_range_becomes_a_log_spaced_discrete_list():
    values = [float(v) for v in log_grid(1e-5, 5e-3)]
    assert values[0] == 1e-5 and values[-1] == 5e-3
    ratios = np.diff(np.log10(values))
    assert np.allclose(ratios, 1 / 12, atol=0.003)  # 12 per decade: a PBT step multiplies by about 1.21
    parameter = katib_parameter("lr_init", HyperParameter(low=1e-5, high=5e-3, log=True))
    assert parameter["parameterType"] == "discrete" and parameter["feasibleSpace"]["list"] == log_grid(1e-5, 5e-3)


def test_katib_sampling_of_the_list_is_log_uniform():
    """Katib's PBT samples a discrete list uniformly (np.random.choice), so half the first generation's
    learning rates fall below the geometric mean of the range; on its linear double grid only ~10% would."""
    rng = np.random.default_rng(0)
    draws = np.array([float(v) for v in rng.choice(log_grid(1e-5, 5e-3), 4000)])
    geometric_mean = math.sqrt(1e-5 * 5e-3)
    assert 0.45 < (draws < geometric_mean).mean() < 0.55
    linear = rng.choice(np.arange(1e-5, 5e-3 + 5e-6, 1e-5), 4000)
    assert (linear < geometric_mean).mean() < 0.1


def test_linear_range_becomes_a_double_grid():
    parameter = katib_parameter("dropout_rate", HyperParameter(low=0.0, high=0.6))
    assert parameter == {
        "name": "dropout_rate",
        "parameterType": "double",
        "feasibleSpace": {"min": "0", "max": "0.6", "step": "0.01"},
    }


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "space, population, message",
    [
        (
            {"lr_init": {"low": 1e-5, "high": 1e-2, "log": True}, "momentum": {"low": 0.1, "high": 0.9}},
            8,
            "cannot search ['momentum']",
        ),
        ({"dropout_rate": {"low": 0.6, "high": 0.1}}, 8, "low (0.6) must be smaller than high (0.1)"),
        (None, 4, "--population must be >= 5 for Katib's PBT (n_population), got 4"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, space, population, message):
    args = ["kubeflow", "katib", "--name", "x", "--image", "i", "--data-pvc", "p", "--config-file", LORENZ,
            "--population", population, "--epochs-per-generation", 5, "-o", tmp_path / "x.yaml"]  # fmt: skip
    if space is not None:
        (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
        args += ["--search-space", tmp_path / "space.yaml"]
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.yaml").exists()


def test_bad_name_is_explained():
    with pytest.raises(ConfigError, match="at most 26 characters"):
        settings(name="a-much-too-long-experiment-name")
    with pytest.raises(ConfigError, match="lower-case"):
        settings(name="Lorenz")


def test_limitations_are_printed_as_notes(tmp_path, capsys):
    assert main(["kubeflow", "katib", "--name", "x", "--image", "i", "--data-pvc", "p", "--config-file", str(LORENZ),
                 "--population", "8", "--epochs-per-generation", "5", "-o", str(tmp_path / "x.yaml")]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "note: Katib samples the first generation; the fixed initial values of lr_init, cd_rate are not used" in err
    assert experiment_of(list(yaml.safe_load_all((tmp_path / "x.yaml").read_text())))["metadata"]["name"] == "x"


# ----------------------------------------------------------------------------------- the Katib flow, emulated here


def katib_substitute(text: str, values: dict[str, str]) -> str:
    """Katib replaces ${trialParameters.NAME} in the trial template's text with the assignment's string."""
    for name, value in values.items():
        text = text.replace(f"${{trialParameters.{name}}}", value)
    assert "${trialParameters." not in text
    return text


def katib_sample(parameters: list[dict], rng: np.random.Generator) -> dict[str, str]:
    """Katib's PBT first generation: np.random.choice over the double grid or the discrete list, sent as str."""
    values = {}
    for p in parameters:
        space = p["feasibleSpace"]
        if p["parameterType"] == "double":
            low, high, step = float(space["min"]), float(space["max"]), float(space["step"])
            values[p["name"]] = str(rng.choice(np.arange(low, high + step / 2, step)))
        else:
            values[p["name"]] = str(rng.choice(space["list"]))
    return values


def katib_perturb(parameters: list[dict], values: dict[str, str], rng: np.random.Generator) -> dict[str, str]:
    """Katib's PBT explore: doubles x0.8 or x1.2 clipped into [min, max]; lists one step (wrapping)."""
    out = {}
    for p in parameters:
        space, value = p["feasibleSpace"], values[p["name"]]
        if p["parameterType"] == "double":
            new = float(value) * rng.choice([0.8, 1.2])
            out[p["name"]] = str(max(float(space["min"]), min(float(space["max"]), new)))
        else:
            index = space["list"].index(value) + rng.choice([-1, 1])
            out[p["name"]] = space["list"][index if index < len(space["list"]) else 0]
    return out


def katib_metrics(log: str, metric_names: list[str]) -> dict[str, list[float]]:
    """Katib's StdOut collector: lines mentioning a metric, every METRICS_FORMAT match named like one."""
    pattern, found = re.compile(METRICS_FORMAT), {}
    for line in log.split("\n"):
        if not any(name in line for name in metric_names):
            continue
        for match in pattern.findall(line):
            name, value = match[0].strip(), match[1].strip()
            if name in metric_names:
                found.setdefault(name, []).append(float(value))
    return found


def run_trial(job: dict, values: dict[str, str], mounts: dict[str, Path], workdir: Path) -> str:
    """The trial's container as Katib runs it with the StdOut collector: command and args joined into
    `sh -c "... 1>metrics.log 2>&1"`, the volume mounts mapped to local folders. Returns the log."""
    container = json.loads(katib_substitute(json.dumps(job), values))["spec"]["template"]["spec"]["containers"][0]
    command = [*container["command"], *container["args"]]
    for i, arg in enumerate(command):
        for mount, local in mounts.items():
            if arg == mount or arg.startswith(mount + "/"):
                command[i] = str(local) + arg[len(mount) :]
    command[0:1] = [sys.executable, "-m", "autolfads.cli"]  # `autolfads` of this checkout
    log = workdir / "metrics.log"
    shell = f"{shlex.join(command)} 1>{shlex.quote(str(log))} 2>&1"
    result = subprocess.run(["sh", "-c", shell], env=cli_env(), timeout=240)
    text = log.read_text()
    assert result.returncode == 0, text[-3000:]
    return text


TINY_KATIB_CONFIG = {
    "model": {
        key.split(".")[1]: value
        for key, value in zip(tiny_overrides()[::2], tiny_overrides()[1::2])
        if key.startswith("model.")
    }
}


@pytest.mark.slow
def test_katib_pbt_flow_emulated(tmp_path, lorenz_file):
    """Generate the Experiment with the CLI, run generation 0 of a trial the way Katib does, score it with
    Katib's parser, then run a PBT child from a copy of the parent's folder with perturbed values."""
    config = {"model": {**TINY_KATIB_CONFIG["model"], "cs_dim": 2, "fp_len": 4},
              "train": {"batch_size": 16, "kl_increase_epoch": 1, "l2_increase_epoch": 1, "num_samples": 2,
                        "device": "cpu"}}  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    manifest = tmp_path / "experiment.yaml"
    assert main(["kubeflow", "katib", "--name", "emulated", "--image", "autolfads:test", "--data-pvc", "data",
                 "--config-file", str(tmp_path / "config.yaml"), "--population", "5", "--epochs-per-generation", "2",
                 "--cpus", "1", "-o", str(manifest)]) == 0  # fmt: skip
    config_map, experiment = yaml.safe_load_all(manifest.read_text())
    spec = experiment["spec"]
    metric_names = [spec["objective"]["objectiveMetricName"], *spec["objective"]["additionalMetricNames"]]
    assert {"val_co_bps", "val_fp_bps"} <= set(metric_names)  # the held-out neurons and bins are scored

    # The ConfigMap and the data PVC, as the pod would see them.
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "config.yaml").write_text(config_map["data"]["config.yaml"])
    (tmp_path / "share").mkdir()
    shutil.copy(lorenz_file, tmp_path / "share" / "lorenz.h5")
    job, rng = spec["trialTemplate"]["trialSpec"], np.random.default_rng(1)

    parent = tmp_path / "suggestion" / "parent"  # the suggestion's folder for the trial (empty in generation 0)
    parent.mkdir(parents=True)
    parent_values = katib_sample(spec["parameters"], rng)
    log = run_trial(
        job,
        parent_values,
        {CHECKPOINT_DIR: parent, DATA_MOUNT: tmp_path / "share", "/etc/autolfads": tmp_path / "etc"},
        tmp_path,
    )
    metrics = katib_metrics(log, metric_names)
    assert set(metrics) == set(metric_names), set(metric_names) - set(metrics)  # every declared metric is printed
    assert metrics["epoch"] == [0, 1] and all(math.isfinite(v) for v in metrics["smth_val_nll_all"])
    parent_state = torch.load(parent / "last.ckpt", weights_only=True)
    assert parent_state["trainer"]["epoch"] == 2
    for name, value in parent_values.items():  # the trial trained with Katib's values
        assert parent_state["trainer"]["members"][0][name] == pytest.approx(float(value))

    child = tmp_path / "suggestion" / "child"
    shutil.copytree(parent, child)  # what Katib's PBT suggestion does before the child starts
    child_values = katib_perturb(spec["parameters"], parent_values, rng)
    assert child_values != parent_values
    log = run_trial(
        job,
        child_values,
        {CHECKPOINT_DIR: child, DATA_MOUNT: tmp_path / "share", "/etc/autolfads": tmp_path / "etc"},
        tmp_path,
    )
    assert katib_metrics(log, metric_names)["epoch"] == [2, 3]  # training continued: the epoch counter advanced
    assert "resumed from" in log and "at epoch 2 with new" in log
    child_state = torch.load(child / "last.ckpt", weights_only=True)
    assert child_state["trainer"]["epoch"] == 4
    # Weights and optimizer continued from the parent's: Adam's step count went on, and the history holds
    # the parent's epochs unchanged.
    steps_per_epoch = float(parent_state["optimizer"]["steps"][0]) / 2
    assert float(child_state["optimizer"]["steps"][0]) == pytest.approx(4 * steps_per_epoch)
    assert child_state["history"][:2] == parent_state["history"]
    for name, value in child_values.items():  # the new values apply after the restore
        assert child_state["trainer"]["members"][0][name] == pytest.approx(float(value))
    # The parent's own folder is untouched by its child.
    assert torch.load(parent / "last.ckpt", weights_only=True)["trainer"]["epoch"] == 2
