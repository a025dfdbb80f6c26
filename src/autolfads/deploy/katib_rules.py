"""Katib's semantic rules that apply offline: its validating webhook and PBT's ValidateAlgorithmSettings.

`check_experiment` lists what Katib would reject in an Experiment (or what would make the AutoLFADS trials
fail), so `autolfads kubeflow katib` never writes a manifest the cluster refuses.
"""

import json
import re

from . import NAME_PATTERN

MIN_POPULATION = 5  # Katib's PBT refuses n_population < 5
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
            "spec.metricsCollectorSpec.collector.kind must be StdOut (autolfads train prints name=value lines), got "
            f"{kind!r}"
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
    problems += _check_trial_parameters(trial_parameters, parameters, text)
    return problems + _check_trial_job(template, job, pbt)


def _check_trial_parameters(trial_parameters: list[dict], parameters: list[dict], text: str) -> list[str]:
    """Each trialParameter well formed, unique, referencing a searched parameter and used in the template's
    text; every placeholder declared; every searched parameter passed to the trial."""
    problems, declared, references = [], [], []
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
        if f"${{trialParameters.{name}}}" not in text:
            problems.append(f"spec.trialTemplate.trialParameters[{i}]: {name!r} is never used in the trial template")
    undeclared = sorted(set(PLACEHOLDER.findall(text)) - set(declared))
    if undeclared:
        problems.append(f"spec.trialTemplate: placeholders {undeclared} are not declared in trialParameters")
    unsearched = sorted({p.get("name") for p in parameters} - set(references))
    if unsearched:
        problems.append(
            f"spec.parameters {unsearched} are never passed to the trial (no trialParameter references them)"
        )
    return problems


def _check_trial_job(template: dict, job: dict, pbt: dict | None) -> list[str]:
    """The trial Job itself: kind, no fixed name, the primary container, restartPolicy, pbt's checkpoint."""
    problems = []
    if not job.get("apiVersion") or not job.get("kind"):
        problems.append("spec.trialTemplate.trialSpec: apiVersion and kind must be specified")
    if job.get("metadata", {}).get("name") or job.get("metadata", {}).get("namespace"):
        problems.append("spec.trialTemplate.trialSpec: metadata.name and metadata.namespace must be omitted")
    pod = job.get("spec", {}).get("template", {}).get("spec", {})
    containers = {c.get("name"): c for c in pod.get("containers", [])}
    primary = containers.get(template.get("primaryContainerName"))
    if primary is None:
        problems.append(
            f"spec.trialTemplate.primaryContainerName {template.get('primaryContainerName')!r} names no container of "
            "the trial"
        )
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append("the trial Job's restartPolicy must be Never (or OnFailure)")
    if primary is not None and pbt is not None:
        command = [*primary.get("command", []), *primary.get("args", [])]
        checkpoint = command[command.index("--checkpoint") + 1] if "--checkpoint" in command else None
        if checkpoint != pbt.get("suggestion_trial_dir"):
            problems.append(
                f"the trial's --checkpoint ({checkpoint}) must be pbt's suggestion_trial_dir "
                f"({pbt.get('suggestion_trial_dir')}), or trials never resume"
            )
    return problems
