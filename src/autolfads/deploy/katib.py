"""A Katib Experiment (kubeflow.org/v1beta1) that runs AutoLFADS as Katib's population-based training.

Each trial runs `autolfads train --checkpoint KATIB_CHECKPOINT_DIR --epochs E ...` for one generation,
resuming from the folder Katib's PBT copied from the trial's parent. Katib's PBT never copies weights from
better trials (a search over hyperparameter schedules); `autolfads kubeflow rayjob` runs real PBT. Why, and
how log-scale ranges become lists: docs/architecture.md ("Katib").
"""

import math
from dataclasses import dataclass

from ..config import Config
from ..errors import ConfigError
from ..layout import CONFIG_FILE, KATIB_CHECKPOINT_DIR
from ..names import MEMBER_HPARAMS, SELECT_METRICS
from ..search.space import HyperParameter, SearchSpace
from . import CONFIG_MOUNT, NAME_PATTERN, config_map, config_map_name, cpu_quantity, metadata, pod_problems
from .katib_rules import MIN_POPULATION, check_experiment

DATA_MOUNT = "/share/data"
CONTAINER = "training-container"
# Katib's default StdOut filter: `name=value` anywhere in a line.
METRICS_FORMAT = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
# Katib's defaults for a batch/v1 Job trial (gjson paths into the Job's status).
JOB_SUCCESS = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
JOB_FAILURE = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
# PBT trials are named "<experiment>-<uuid4>" and the Job's pods carry that name in a label (<= 63 chars).
MAX_NAME_LENGTH = 63 - 37
LOG_POINTS_PER_DECADE = 12  # one list step = x10^(1/12) = x1.21
LINEAR_STEPS = 50  # a double's grid step: the power of ten just below (max - min) / 50


@dataclass(frozen=True)
class KatibSettings:
    """Everything `autolfads kubeflow katib` needs; the config and search space come parsed and verbatim."""

    name: str
    image: str
    data_pvc: str
    config: Config
    config_text: str
    space: SearchSpace
    population: int
    epochs_per_generation: int
    data_subpath: str | None = None
    namespace: str | None = None
    gpus: int = 0
    cpus: float = 2.0
    memory: str = "4Gi"
    truncation_threshold: float = 0.4
    max_generations: int = 50
    run_as_user: int = 1000
    image_pull_policy: str = "IfNotPresent"

    def __post_init__(self) -> None:
        problems = []
        if not NAME_PATTERN.match(self.name) or len(self.name) > MAX_NAME_LENGTH:
            problems.append(
                f"--name {self.name!r}: use lower-case letters, digits and '-', starting with a letter, at most "
                f"{MAX_NAME_LENGTH} characters (Katib names each PBT trial <name>-<36-character uuid>)"
            )
        if self.population < MIN_POPULATION:
            problems.append(
                f"--population must be >= {MIN_POPULATION} for Katib's PBT (n_population), got {self.population}"
            )
        if self.epochs_per_generation < 1:
            problems.append(f"--epochs-per-generation must be >= 1, got {self.epochs_per_generation}")
        if self.max_generations < 1:
            problems.append(f"--max-generations must be >= 1, got {self.max_generations}")
        if not 0 <= self.truncation_threshold <= 1:
            problems.append(f"--truncation-threshold must lie in [0, 1], got {self.truncation_threshold}")
        if self.gpus < 0 or self.cpus <= 0:
            problems.append(f"--gpus must be >= 0 and --cpus > 0, got {self.gpus} and {self.cpus}")
        if self.run_as_user < 0:
            problems.append(f"--run-as-user must be >= 0, got {self.run_as_user}")
        problems += pod_problems(
            self.image,
            self.namespace,
            {"--data-pvc": self.data_pvc},
            {"--memory": self.memory},
            {"--data-subpath": self.data_subpath},
        )
        if problems:
            raise ConfigError("; ".join(problems))


# ---------------------------------------------------------------------------------------------------------------
# What `autolfads train` prints


def printed_metrics(config: Config) -> list[str]:
    """The validation metrics every epoch of `autolfads train` prints for this config (val_r2 only appears
    with ground truth in the data, so it is left out), then the epoch counter, loss and learning rate. The
    first, Katib's objective, is train.select_metric."""
    model = config.model
    poisson = model.reconstruction == "poisson"
    names = ["val_loss", "val_recon", "val_nll_heldin", "val_kl_ic", "val_kl_co"]
    if model.sv_rate > 0:
        names.append("val_sv_nll")
    elif poisson:
        names.append("val_bps")
    if model.cs_dim > 0:
        names += ["val_nll_heldout"] + (["val_co_bps"] if poisson else [])
    if model.fp_len > 0:
        names += ["val_nll_fp"] + (["val_fp_bps"] if poisson else [])
    select = config.train.select_metric
    return [select, *(name for name in SELECT_METRICS if name != select), *names, "epoch", "loss", "lr"]


# ---------------------------------------------------------------------------------------------------------------
# Search space -> Katib parameters


def _number(value: float) -> str:
    return f"{value:.3g}"


def log_grid(low: float, high: float) -> list[str]:
    """Log-spaced values from low to high, ends included, about LOG_POINTS_PER_DECADE per decade."""
    steps = max(1, round(math.log10(high / low) * LOG_POINTS_PER_DECADE))
    values = [low * (high / low) ** (i / steps) for i in range(steps + 1)]
    return list(dict.fromkeys(_number(v) for v in values))  # 3 significant digits can merge neighbours


def linear_step(low: float, high: float) -> float:
    return 10.0 ** math.floor(math.log10((high - low) / LINEAR_STEPS))


def katib_parameter(name: str, hp: HyperParameter) -> dict:
    """One hyperparameter as Katib's ParameterSpec (camelCase dict, as the API serialises it)."""
    if hp.log:
        return {"feasibleSpace": {"list": log_grid(hp.low, hp.high)}, "name": name, "parameterType": "discrete"}
    space = {"max": _number(hp.high), "min": _number(hp.low), "step": _number(linear_step(hp.low, hp.high))}
    return {"feasibleSpace": space, "name": name, "parameterType": "double"}


def limitations(space: SearchSpace) -> list[str]:
    """What of the search space Katib cannot express, one line each (the CLI prints them as notes)."""
    notes = []
    fixed = [name for name, hp in space.params.items() if hp.initial is not None]
    if fixed:
        notes.append(f"Katib samples the first generation; the fixed initial values of {', '.join(fixed)} are not used")
    unbounded = [name for name, hp in space.params.items() if not hp.enforce_limits]
    if unbounded:
        notes.append(
            f"Katib keeps {', '.join(unbounded)} inside [low, high] (enforce_limits: false cannot be expressed)"
        )
    return notes


# ---------------------------------------------------------------------------------------------------------------
# The Experiment


def trial_command(settings: KatibSettings) -> list[str]:
    """`autolfads train` for one generation; hyperparameters are Katib placeholders."""
    threads = max(1, int(settings.cpus))  # torch threads = the CPUs the pod asks for (see platform notes)
    args = ["autolfads", "train", "--checkpoint", KATIB_CHECKPOINT_DIR, "--data", DATA_MOUNT,
            "--config-file", f"{CONFIG_MOUNT}/{CONFIG_FILE}", "--epochs", str(settings.epochs_per_generation),
            "train.threads", str(threads)]  # fmt: skip
    for name in settings.space.params:
        args += [f"{MEMBER_HPARAMS[name]}.{name}", f"${{trialParameters.{name}}}"]
    return args


def trial_job(settings: KatibSettings) -> dict:
    """The batch/v1 Job Katib creates for each trial (a template: no name, placeholders in the args)."""
    command = trial_command(settings)
    resources = {
        "requests": {"cpu": cpu_quantity(settings.cpus), "memory": settings.memory},
        "limits": {"memory": settings.memory},
    }
    if settings.gpus:
        resources["limits"]["nvidia.com/gpu"] = settings.gpus
    data_mount = {"name": "data", "mountPath": DATA_MOUNT, "readOnly": True}
    if settings.data_subpath:
        data_mount["subPath"] = settings.data_subpath
    if settings.run_as_user:
        pod_security = {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            "fsGroup": settings.run_as_user,
        }
    else:
        pod_security = {"runAsUser": 0}
    container = {
        "name": CONTAINER,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": command[:1],
        "args": command[1:],
        "resources": resources,
        "volumeMounts": [data_mount, {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True}],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    pod = {
        # Kubeflow profile namespaces inject Istio sidecars, which would keep a finished Job running.
        "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": pod_security,
            "containers": [container],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": settings.data_pvc, "readOnly": True}},
                {"name": "config", "configMap": {"name": config_map_name(settings.name)}},
            ],
        },
    }
    # backoffLimit 0: a failed generation is Katib's to retry (PBT requeues it), not the Job's.
    return {"apiVersion": "batch/v1", "kind": "Job", "spec": {"backoffLimit": 0, "template": pod}}


def build_experiment(settings: KatibSettings) -> dict:
    """The Experiment as the Katib API serialises it: camelCase keys in the order of the SDK's models
    (kubeflow.katib.V1beta1Experiment and its parts), so the YAML is the SDK's, written without it."""
    metrics = printed_metrics(settings.config)
    pbt = {
        "suggestion_trial_dir": KATIB_CHECKPOINT_DIR,
        "n_population": settings.population,
        "truncation_threshold": settings.truncation_threshold,
    }
    trial_parameters = [
        {"description": f"{MEMBER_HPARAMS[name]}.{name} of autolfads train", "name": name, "reference": name}
        for name in settings.space.params
    ]
    spec = {
        "algorithm": {
            "algorithmName": "pbt",
            "algorithmSettings": [{"name": key, "value": str(value)} for key, value in pbt.items()],
        },
        "maxFailedTrialCount": settings.population,  # a diverged member fails its trial; PBT requeues it
        "maxTrialCount": settings.population * settings.max_generations,
        "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
        "objective": {
            "additionalMetricNames": metrics[1:],
            "metricStrategies": [{"name": name, "value": "latest"} for name in metrics],
            "objectiveMetricName": metrics[0],
            "type": "minimize",
        },
        "parallelTrialCount": settings.population,
        "parameters": [katib_parameter(name, hp) for name, hp in settings.space.params.items()],
        "resumePolicy": "FromVolume",  # PBT keeps its trial folders on the suggestion's volume
        "trialTemplate": {
            "failureCondition": JOB_FAILURE,
            "primaryContainerName": CONTAINER,
            "successCondition": JOB_SUCCESS,
            "trialParameters": trial_parameters,
            "trialSpec": trial_job(settings),
        },
    }
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": metadata(settings.name, settings.namespace),
        "spec": spec,
    }


def katib_documents(settings: KatibSettings) -> list[dict]:
    """[ConfigMap with the config, Experiment] as plain dicts, checked against Katib's offline rules."""
    experiment = build_experiment(settings)
    problems = check_experiment(experiment, printed_metrics(settings.config))
    if problems:  # a bug here, not a user error: the settings were validated
        raise AssertionError("generated Experiment breaks Katib's rules: " + "; ".join(problems))
    return [
        config_map(config_map_name(settings.name), settings.namespace, {CONFIG_FILE: settings.config_text}),
        experiment,
    ]
