"""A Katib Experiment (kubeflow.org/v1beta1) that runs AutoLFADS as Katib's population-based training.

How a Katib PBT trial works, and what `autolfads train` does in it:
- Katib's PBT suggestion keeps one folder per trial on its own RWX volume. Before a child trial starts it
  copies the PARENT trial's folder into the child's, and Katib's webhook mounts that folder in the trial pod
  at `suggestion_trial_dir` (/var/log/katib/checkpoints).
- The trial runs `autolfads train --checkpoint /var/log/katib/checkpoints --epochs E KEY VALUE ...`: it
  resumes from the checkpoint it finds there (none in generation 0), applies the trial's hyperparameters
  AFTER restoring the state, trains exactly E more epochs and prints `name=value` lines every epoch, which
  Katib's StdOut metrics collector parses. The objective is the smoothed validation NLL of the LAST epoch
  (metricStrategies `latest`; Katib's default would score a trial by its best epoch ever).
- Katib's PBT does NOT copy weights from better trials. After each generation it truncates: the bottom
  `truncation_threshold` of trials take the hyperparameters of a random top trial (exploit) but keep their
  OWN parent's checkpoint; the rest perturb their values (x0.8 or x1.2 for doubles, one list step for
  discrete lists). So on Katib every lineage keeps its own weights: it is a search over hyperparameter
  schedules, not Jaderberg PBT, and a poor model is never replaced by a copy of a good one. Use
  `autolfads search` (embedded, or `--backend ray` through `autolfads kubeflow rayjob`) for real PBT.

Katib samples a `double` on the linear grid np.arange(min, max, step), which puts most members of a
log-scale range (1e-5..5e-3) in its top decade. Log-scale hyperparameters therefore become `discrete`
parameters whose list is log-spaced (LOG_POINTS_PER_DECADE values per decade): the first generation draws
uniformly from the list (log-uniform), and a perturbation moves one step up or down (x/÷ 1.21, close to
Katib's x1.2). Katib's PBT ignores `feasibleSpace.distribution: logUniform`, hence the list. Katib cannot
start members at a fixed `initial` value and always keeps values inside the range (see `limitations`).
"""

import json
import math
import re
from dataclasses import dataclass

from ..config import Config
from ..errors import ConfigError
from ..layout import CONFIG_FILE, KATIB_CHECKPOINT_DIR
from ..names import MEMBER_HPARAMS, METRIC
from ..search.space import HyperParameter, SearchSpace
from . import CONFIG_MOUNT, config_map, cpu_quantity, metadata

DATA_MOUNT = "/share/data"
CONTAINER = "training-container"
# Katib's default StdOut filter: `name=value` anywhere in a line.
METRICS_FORMAT = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
# Katib's defaults for a batch/v1 Job trial (gjson paths into the Job's status).
JOB_SUCCESS = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
JOB_FAILURE = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
MIN_POPULATION = 5  # Katib's PBT refuses n_population < 5
# PBT trials are named "<experiment>-<uuid4>" and the Job's pods carry that name in a label (<= 63 chars).
MAX_NAME_LENGTH = 63 - 37
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
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
        if problems:
            raise ConfigError("; ".join(problems))


# ---------------------------------------------------------------------------------------------------------------
# What `autolfads train` prints


def printed_metrics(config: Config) -> list[str]:
    """The validation metrics every epoch of `autolfads train` prints for this config (val_r2 only appears
    with ground truth in the data, so it is left out), then the epoch counter, loss and learning rate."""
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
    return [METRIC, *names, "epoch", "loss", "lr"]


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
        return {"name": name, "parameterType": "discrete", "feasibleSpace": {"list": log_grid(hp.low, hp.high)}}
    space = {"min": _number(hp.low), "max": _number(hp.high), "step": _number(linear_step(hp.low, hp.high))}
    return {"name": name, "parameterType": "double", "feasibleSpace": space}


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


def config_map_name(settings: KatibSettings) -> str:
    return f"{settings.name}-config"


def trial_command(settings: KatibSettings) -> list[str]:
    """`autolfads train` for one generation; hyperparameters are Katib placeholders."""
    threads = max(1, int(settings.cpus))  # torch threads = the CPUs the pod asks for (see platform notes)
    args = ["autolfads", "train", "--checkpoint", KATIB_CHECKPOINT_DIR, "--data", DATA_MOUNT,
            "--config-file", f"{CONFIG_MOUNT}/{CONFIG_FILE}", "--epochs", str(settings.epochs_per_generation),
            "train.threads", str(threads)]  # fmt: skip
    for name in settings.space.params:
        args += [f"{MEMBER_HPARAMS[name]}.{name}", "${trialParameters.%s}" % name]
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
                {"name": "config", "configMap": {"name": config_map_name(settings)}},
            ],
        },
    }
    # backoffLimit 0: a failed generation is Katib's to retry (PBT requeues it), not the Job's.
    return {"apiVersion": "batch/v1", "kind": "Job", "spec": {"backoffLimit": 0, "template": pod}}


def build_experiment(settings: KatibSettings):
    """The Experiment as the Katib SDK's model objects (kubeflow.katib.V1beta1Experiment)."""
    from kubeflow import katib

    metrics = printed_metrics(settings.config)
    strategies = [katib.V1beta1MetricStrategy(name=name, value="latest") for name in metrics]
    pbt = {
        "suggestion_trial_dir": KATIB_CHECKPOINT_DIR,
        "n_population": settings.population,
        "truncation_threshold": settings.truncation_threshold,
    }
    parameters = []
    for name, hp in settings.space.params.items():
        spec = katib_parameter(name, hp)
        parameters.append(
            katib.V1beta1ParameterSpec(
                name=name,
                parameter_type=spec["parameterType"],
                feasible_space=katib.V1beta1FeasibleSpace(**spec["feasibleSpace"]),
            )
        )
    trial_parameters = [
        katib.V1beta1TrialParameterSpec(
            name=name, reference=name, description=f"{MEMBER_HPARAMS[name]}.{name} of autolfads train"
        )
        for name in settings.space.params
    ]
    return katib.V1beta1Experiment(
        api_version="kubeflow.org/v1beta1",
        kind="Experiment",
        metadata=metadata(settings.name, settings.namespace),
        spec=katib.V1beta1ExperimentSpec(
            algorithm=katib.V1beta1AlgorithmSpec(
                algorithm_name="pbt",
                algorithm_settings=[katib.V1beta1AlgorithmSetting(name=k, value=str(v)) for k, v in pbt.items()],
            ),
            objective=katib.V1beta1ObjectiveSpec(
                type="minimize",
                objective_metric_name=metrics[0],
                additional_metric_names=metrics[1:],
                metric_strategies=strategies,
            ),
            parameters=parameters,
            parallel_trial_count=settings.population,
            max_trial_count=settings.population * settings.max_generations,
            max_failed_trial_count=settings.population,  # a diverged member fails its trial; PBT requeues it
            resume_policy="FromVolume",  # PBT keeps its trial folders on the suggestion's volume
            metrics_collector_spec=katib.V1beta1MetricsCollectorSpec(
                collector=katib.V1beta1CollectorSpec(kind="StdOut")
            ),
            trial_template=katib.V1beta1TrialTemplate(
                primary_container_name=CONTAINER,
                success_condition=JOB_SUCCESS,
                failure_condition=JOB_FAILURE,
                trial_parameters=trial_parameters,
                trial_spec=trial_job(settings),
            ),
        ),
    )


def katib_documents(settings: KatibSettings) -> list[dict]:
    """[ConfigMap with the config, Experiment] as plain dicts, checked against Katib's offline rules."""
    from kubeflow.katib import ApiClient

    experiment = ApiClient().sanitize_for_serialization(build_experiment(settings))
    problems = check_experiment(experiment, printed_metrics(settings.config))
    if problems:  # a bug here, not a user error: the settings were validated
        raise AssertionError("generated Experiment breaks Katib's rules: " + "; ".join(problems))
    return [
        config_map(config_map_name(settings), settings.namespace, {CONFIG_FILE: settings.config_text}),
        experiment,
    ]


# ---------------------------------------------------------------------------------------------------------------
# Katib's semantic rules that apply offline (its validating webhook and PBT's ValidateAlgorithmSettings)

PLACEHOLDER = re.compile(r"\$\{trialParameters\.([^}]*)\}")
PBT_REQUIRED = ("suggestion_trial_dir", "n_population", "truncation_threshold")


def check_experiment(doc: dict, printed: list[str] | None = None) -> list[str]:
    """Problems Katib would reject (or that would make the AutoLFADS trials fail), one line each; [] if none.
    `printed`: the metric names the trial command prints (the objective and additional metrics must be)."""
    problems: list[str] = []
    if (doc.get("apiVersion"), doc.get("kind")) != ("kubeflow.org/v1beta1", "Experiment"):
        problems.append("apiVersion/kind must be kubeflow.org/v1beta1 Experiment")
    name = doc.get("metadata", {}).get("name", "")
    if not NAME_PATTERN.match(name):
        problems.append(f"metadata.name {name!r} must be lower-case alphanumerics or '-', starting with a letter")
    spec = doc.get("spec", {})
    problems += _check_counts(spec)
    problems += _check_objective(spec.get("objective"), printed)
    settings = _check_algorithm(spec.get("algorithm"), problems)
    if spec.get("resumePolicy") not in (None, "", "Never", "LongRunning", "FromVolume"):
        problems.append(f"spec.resumePolicy {spec.get('resumePolicy')!r} is not a Katib resume policy")
    if settings is not None and spec.get("resumePolicy") != "FromVolume":
        problems.append(
            "spec.resumePolicy must be FromVolume for pbt (its trial folders live on the suggestion's volume)"
        )
    problems += _check_parameters(spec.get("parameters") or [])
    problems += _check_trial_template(spec.get("trialTemplate"), spec.get("parameters") or [], settings)
    kind = spec.get("metricsCollectorSpec", {}).get("collector", {}).get("kind")
    if kind != "StdOut":
        problems.append(
            f"spec.metricsCollectorSpec.collector.kind must be StdOut (autolfads train prints name=value lines), got {kind!r}"
        )
    return problems


def _check_counts(spec: dict) -> list[str]:
    problems = []
    maximum, parallel, failed = (
        spec.get("maxTrialCount"),
        spec.get("parallelTrialCount"),
        spec.get("maxFailedTrialCount"),
    )
    if maximum is not None and maximum <= 0:
        problems.append("spec.maxTrialCount must be greater than 0")
    if parallel is not None and parallel <= 0:
        problems.append("spec.parallelTrialCount must be greater than 0")
    if failed is not None and failed < 0:
        problems.append("spec.maxFailedTrialCount must not be negative")
    if maximum is not None and failed is not None and failed > maximum:
        problems.append("spec.maxFailedTrialCount must be <= spec.maxTrialCount")
    if maximum is not None and parallel is not None and parallel > maximum:
        problems.append("spec.parallelTrialCount must be <= spec.maxTrialCount")
    return problems


def _check_objective(objective: dict | None, printed: list[str] | None) -> list[str]:
    if not objective:
        return ["spec.objective must be specified"]
    problems = []
    if objective.get("type") not in ("minimize", "maximize"):
        problems.append(f"spec.objective.type must be minimize or maximize, got {objective.get('type')!r}")
    metric = objective.get("objectiveMetricName")
    additional = objective.get("additionalMetricNames") or []
    if not metric:
        problems.append("spec.objective.objectiveMetricName must be specified")
    if metric in additional:
        problems.append("spec.objective.additionalMetricNames must not contain the objective metric")
    if printed is not None:
        missing = [m for m in [metric, *additional] if m not in printed]
        if missing:
            problems.append(f"metrics {missing} are never printed by autolfads train (it prints {printed})")
    for strategy in objective.get("metricStrategies") or []:
        if strategy.get("value") not in ("min", "max", "latest"):
            problems.append(
                f"spec.objective.metricStrategies: {strategy.get('name')}: value must be min, max or latest"
            )
        if strategy.get("name") not in [metric, *additional]:
            problems.append(
                f"spec.objective.metricStrategies: {strategy.get('name')!r} is not an objective or additional metric"
            )
    return problems


def _check_algorithm(algorithm: dict | None, problems: list[str]) -> dict | None:
    """Appends problems; returns the pbt settings by name (None when the algorithm is not pbt)."""
    if not algorithm or not algorithm.get("algorithmName"):
        problems.append("spec.algorithm.algorithmName must be specified")
        return None
    if algorithm["algorithmName"] != "pbt":
        problems.append(f"spec.algorithm.algorithmName must be pbt for AutoLFADS, got {algorithm['algorithmName']!r}")
        return None
    settings = {s.get("name"): s.get("value") for s in algorithm.get("algorithmSettings") or []}
    missing = [key for key in PBT_REQUIRED if key not in settings]
    if missing:
        problems.append(f"pbt settings missing: {', '.join(missing)}")
        return settings
    try:
        if int(settings["n_population"]) < MIN_POPULATION:
            problems.append(f"pbt n_population should be >= {MIN_POPULATION}, got {settings['n_population']}")
    except (TypeError, ValueError):
        problems.append(f"pbt n_population must be an integer, got {settings['n_population']!r}")
    try:
        if not 0 <= float(settings["truncation_threshold"]) <= 1:
            problems.append(f"pbt truncation_threshold must lie in [0, 1], got {settings['truncation_threshold']}")
    except (TypeError, ValueError):
        problems.append(f"pbt truncation_threshold must be a number, got {settings['truncation_threshold']!r}")
    if "resample_probability" in settings:
        problems.append("pbt resample_probability must not be set (Katib 0.19's PBT validation crashes on it)")
    return settings


def _check_parameters(parameters: list[dict]) -> list[str]:
    if not parameters:
        return ["spec.parameters must be specified"]
    problems = []
    names = [p.get("name") for p in parameters]
    if len(set(names)) != len(names):
        problems.append(f"spec.parameters: duplicate names in {names}")
    for i, p in enumerate(parameters):
        where, kind, space = (
            f"spec.parameters[{i}] ({p.get('name')})",
            p.get("parameterType"),
            p.get("feasibleSpace") or {},
        )
        if kind in ("double", "int"):
            if space.get("list"):
                problems.append(f"{where}: feasibleSpace.list is not supported for {kind}")
            try:
                low, high = float(space["min"]), float(space["max"])
                step = float(space.get("step") or 1)
            except (KeyError, TypeError, ValueError):
                problems.append(f"{where}: feasibleSpace.min and .max must be numbers")
                continue
            if low >= high:
                problems.append(f"{where}: min ({space['min']}) must be smaller than max ({space['max']})")
            if step <= 0 or step > high - low:
                problems.append(f"{where}: step ({space.get('step')}) must be > 0 and at most max - min")
        elif kind in ("discrete", "categorical"):
            if any(key in space for key in ("min", "max", "step")):
                problems.append(f"{where}: feasibleSpace .min, .max and .step are not supported for {kind}")
            values = space.get("list") or []
            if len(values) < 2 or len(set(values)) != len(values):
                problems.append(f"{where}: feasibleSpace.list needs at least two distinct values")
            if kind == "discrete":
                try:
                    numbers = [float(v) for v in values]
                except ValueError:
                    problems.append(f"{where}: discrete values must be numbers")
                    continue
                if numbers != sorted(numbers):
                    problems.append(f"{where}: discrete values must increase (PBT perturbs to a neighbour)")
        else:
            problems.append(f"{where}: parameterType {kind!r} is not supported")
    return problems


def _check_trial_template(template: dict | None, parameters: list[dict], pbt: dict | None) -> list[str]:
    if not template:
        return ["spec.trialTemplate must be specified"]
    problems = []
    if not template.get("successCondition") or not template.get("failureCondition"):
        problems.append("spec.trialTemplate: successCondition and failureCondition must be specified")
    trial_parameters = template.get("trialParameters") or []
    if not trial_parameters:
        problems.append("spec.trialTemplate.trialParameters must be specified")
    job = template.get("trialSpec")
    if not isinstance(job, dict):
        return problems + ["spec.trialTemplate.trialSpec must be specified"]
    text = json.dumps(job)  # Katib substitutes placeholders in the template's serialised text
    declared, references = [], []
    for i, tp in enumerate(trial_parameters):
        name, reference = tp.get("name", ""), tp.get("reference", "")
        if not name or not reference or "{" in name or "}" in name:
            problems.append(
                f"spec.trialTemplate.trialParameters[{i}]: name and reference must be set, name without braces"
            )
            continue
        if name in declared or reference in references:
            problems.append(f"spec.trialTemplate.trialParameters[{i}]: {name!r} / {reference!r} is duplicated")
        declared.append(name)
        references.append(reference)
        if reference not in [p.get("name") for p in parameters]:
            problems.append(
                f"spec.trialTemplate.trialParameters[{i}]: reference {reference!r} is not in spec.parameters"
            )
        if "${trialParameters.%s}" % name not in text:
            problems.append(f"spec.trialTemplate.trialParameters[{i}]: {name!r} is never used in the trial template")
    undeclared = sorted(set(PLACEHOLDER.findall(text)) - set(declared))
    if undeclared:
        problems.append(f"spec.trialTemplate: placeholders {undeclared} are not declared in trialParameters")
    unsearched = sorted({p.get("name") for p in parameters} - set(references))
    if unsearched:
        problems.append(
            f"spec.parameters {unsearched} are never passed to the trial (no trialParameter references them)"
        )
    if not job.get("apiVersion") or not job.get("kind"):
        problems.append("spec.trialTemplate.trialSpec: apiVersion and kind must be specified")
    if job.get("metadata", {}).get("name") or job.get("metadata", {}).get("namespace"):
        problems.append("spec.trialTemplate.trialSpec: metadata.name and metadata.namespace must be omitted")
    pod = job.get("spec", {}).get("template", {}).get("spec", {})
    containers = {c.get("name"): c for c in pod.get("containers", [])}
    primary = containers.get(template.get("primaryContainerName"))
    if primary is None:
        problems.append(
            f"spec.trialTemplate.primaryContainerName {template.get('primaryContainerName')!r} names no container of the trial"
        )
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append("the trial Job's restartPolicy must be Never (or OnFailure)")
    if primary is not None and pbt is not None:
        command = [*primary.get("command", []), *primary.get("args", [])]
        checkpoint = command[command.index("--checkpoint") + 1] if "--checkpoint" in command else None
        if checkpoint != pbt.get("suggestion_trial_dir"):
            problems.append(
                f"the trial's --checkpoint ({checkpoint}) must be pbt's suggestion_trial_dir ({pbt.get('suggestion_trial_dir')}), or trials never resume"
            )
    return problems
