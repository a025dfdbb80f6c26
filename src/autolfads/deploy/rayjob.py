"""A KubeRay RayJob (ray.io/v1) that runs a real AutoLFADS search, `autolfads search --backend ray`, on Kubernetes.

Unlike Katib's PBT, this is the same population-based training as `autolfads search` on one machine: a
loser copies the winner's weights and optimizer state. KubeRay starts a Ray cluster for the job (a head
pod, which runs the search driver and no members, and a group of worker pods, which run the members),
submits the entrypoint, and deletes the cluster when the search ends. Every pod mounts the same RWX
volume at /share: the data is read from it and the search's workdir (tables, checkpoints, best_model/)
is written to it, so it outlives the cluster. The config and search space travel in a ConfigMap.
Pods run as a non-root user; Ray token authentication is on (KubeRay >= 1.5.1 manages the token).
"""

import shlex
from dataclasses import dataclass

from ..errors import ConfigError
from ..layout import CONFIG_FILE, SPACE_FILE
from . import CONFIG_MOUNT, NAME_PATTERN, config_map, config_map_name, cpu_quantity, metadata, pod_problems

RAY_VERSION = "2.60.0"  # the Ray of the images (deploy/docker/requirements-ray.txt)
SHARE = "/share"
# KubeRay derives the cluster's, pods' and services' names from the RayJob's (label values: <= 63 chars).
MAX_NAME_LENGTH = 40


@dataclass(frozen=True)
class RayJobSettings:
    name: str
    image: str
    pvc: str
    config_text: str
    population: int
    epochs_per_generation: int
    space_text: str | None = None
    data_subpath: str = "data"
    workdir_subpath: str | None = None  # default runs/<name>
    namespace: str | None = None
    max_generations: int = 50
    seed: int = 0
    workers: int = 2
    cpus_per_worker: float = 4.0
    gpus_per_worker: int = 0
    memory_per_worker: str = "8Gi"
    cpus_per_member: float = 1.0
    gpus_per_member: float = 0.0
    members_per_trial: int = 1  # members trained together on one population axis in one Ray trial
    cpus_per_trial: float | None = None  # default members_per_trial x cpus_per_member
    gpus_per_trial: float | None = None  # default members_per_trial x gpus_per_member
    head_cpus: float = 2.0
    head_memory: str = "8Gi"
    run_as_user: int = 1000
    image_pull_policy: str = "IfNotPresent"

    def __post_init__(self) -> None:
        problems = []
        if not NAME_PATTERN.match(self.name) or len(self.name) > MAX_NAME_LENGTH:
            problems.append(
                f"--name {self.name!r}: use lower-case letters, digits and '-', starting with a letter, at most "
                f"{MAX_NAME_LENGTH} characters"
            )
        if self.population < 2:
            problems.append(f"--population must be >= 2, got {self.population}")
        if self.epochs_per_generation < 1 or self.max_generations < 1:
            problems.append("--epochs-per-generation and --max-generations must be >= 1")
        if self.workers < 1:
            problems.append(f"--workers must be >= 1, got {self.workers}")
        if not 1 <= self.members_per_trial <= self.population:
            problems.append(
                f"--members-per-trial must be between 1 and the population ({self.population}), "
                f"got {self.members_per_trial}"
            )
        problems += self._resource_problems()
        if self.run_as_user < 1:
            problems.append(f"--run-as-user must be a non-root uid (>= 1), got {self.run_as_user}")
        problems += pod_problems(
            self.image,
            self.namespace,
            {"--pvc": self.pvc},
            {"--memory-per-worker": self.memory_per_worker},
            {"--data-subpath": self.data_subpath, "--workdir-subpath": self.workdir_subpath},
        )
        if problems:
            raise ConfigError("; ".join(problems))

    def _resource_problems(self) -> list[str]:
        """Each resource option in range, then a trial's CPUs and GPUs inside one worker pod's."""
        given = {
            "--cpus-per-worker": self.cpus_per_worker,
            "--cpus-per-member": self.cpus_per_member,
            "--cpus-per-trial": self.cpus_per_trial,
        }
        problems = [
            f"{option} must be > 0, got {value:g}"
            for option, value in given.items()
            if value is not None and value <= 0
        ]
        gpus = {
            "--gpus-per-worker": self.gpus_per_worker,
            "--gpus-per-member": self.gpus_per_member,
            "--gpus-per-trial": self.gpus_per_trial,
        }
        problems += [
            f"{option} must be >= 0, got {value:g}" for option, value in gpus.items() if value is not None and value < 0
        ]
        if problems:
            return problems
        if self.trial_cpus > self.cpus_per_worker:
            problems.append(
                f"{self._cpu_option} ({self.trial_cpus:g}) must fit in a worker's "
                f"--cpus-per-worker ({self.cpus_per_worker:g})"
            )
        if self.trial_gpus > self.gpus_per_worker:
            problems.append(
                f"{self._gpu_option} ({self.trial_gpus:g}) must fit in a worker's "
                f"--gpus-per-worker ({self.gpus_per_worker})"
            )
        return problems

    @property
    def trial_cpus(self) -> float:
        """CPUs one Ray trial asks for (a group of members_per_trial members)."""
        return self.members_per_trial * self.cpus_per_member if self.cpus_per_trial is None else self.cpus_per_trial

    @property
    def trial_gpus(self) -> float:
        return self.members_per_trial * self.gpus_per_member if self.gpus_per_trial is None else self.gpus_per_trial

    @property
    def _cpu_option(self) -> str:
        if self.cpus_per_trial is not None:
            return "--cpus-per-trial"
        return "--cpus-per-member" + (" x --members-per-trial" if self.members_per_trial > 1 else "")

    @property
    def _gpu_option(self) -> str:
        if self.gpus_per_trial is not None:
            return "--gpus-per-trial"
        return "--gpus-per-member" + (" x --members-per-trial" if self.members_per_trial > 1 else "")

    @property
    def workdir(self) -> str:
        return f"{SHARE}/{self.workdir_subpath or f'runs/{self.name}'}"


def search_command(settings: RayJobSettings) -> list[str]:
    command = ["autolfads", "search", "--backend", "ray", "--address", "auto",
               "--data", f"{SHARE}/{settings.data_subpath}", "--config-file", f"{CONFIG_MOUNT}/{CONFIG_FILE}",
               "--workdir", settings.workdir, "--population", str(settings.population),
               "--epochs-per-generation", str(settings.epochs_per_generation),
               "--max-generations", str(settings.max_generations), "--seed", str(settings.seed),
               "--cpus-per-member", f"{settings.cpus_per_member:g}",
               "--gpus-per-member", f"{settings.gpus_per_member:g}"]  # fmt: skip
    if settings.members_per_trial > 1:
        command += ["--members-per-trial", str(settings.members_per_trial)]
    if settings.cpus_per_trial is not None:
        command += ["--cpus-per-trial", f"{settings.cpus_per_trial:g}"]
    if settings.gpus_per_trial is not None:
        command += ["--gpus-per-trial", f"{settings.gpus_per_trial:g}"]
    if settings.space_text is not None:
        command += ["--search-space", f"{CONFIG_MOUNT}/{SPACE_FILE}"]
    return command


def _pod(settings: RayJobSettings, container: str, cpus: float, memory: str, gpus: int, ports: list[dict]) -> dict:
    resources = {
        "requests": {"cpu": cpu_quantity(cpus), "memory": memory},
        "limits": {"cpu": cpu_quantity(cpus), "memory": memory},
    }
    if gpus:
        resources["limits"]["nvidia.com/gpu"] = gpus
    spec = {
        "name": container,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "resources": resources,
        "volumeMounts": [
            {"name": "share", "mountPath": SHARE},
            {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
        ],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    if ports:
        spec["ports"] = ports
    uid = settings.run_as_user
    return {
        # Ray's many ports do not go through an Istio sidecar (Kubeflow profile namespaces inject one).
        "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid},
            "containers": [spec],
            "volumes": [
                {"name": "share", "persistentVolumeClaim": {"claimName": settings.pvc}},
                {"name": "config", "configMap": {"name": config_map_name(settings.name)}},
            ],
        },
    }


def build_rayjob(settings: RayJobSettings) -> dict:
    ports = [
        {"containerPort": 6379, "name": "gcs-server"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": 10001, "name": "client"},
    ]
    head = {
        # num-cpus 0: the head runs the search driver only; every member is scheduled on a worker.
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": _pod(settings, "ray-head", settings.head_cpus, settings.head_memory, 0, ports),
    }
    workers = {
        "groupName": "members",
        "replicas": settings.workers,
        "minReplicas": settings.workers,
        "maxReplicas": settings.workers,
        "rayStartParams": {},
        "template": _pod(
            settings, "ray-worker", settings.cpus_per_worker, settings.memory_per_worker, settings.gpus_per_worker, []
        ),
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": metadata(settings.name, settings.namespace),
        "spec": {
            "entrypoint": shlex.join(search_command(settings)),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "rayClusterSpec": {
                "rayVersion": RAY_VERSION,
                "authOptions": {"mode": "token"},
                "headGroupSpec": head,
                "workerGroupSpecs": [workers],
            },
        },
    }


def rayjob_documents(settings: RayJobSettings) -> list[dict]:
    files = {CONFIG_FILE: settings.config_text}
    if settings.space_text is not None:
        files[SPACE_FILE] = settings.space_text
    return [config_map(config_map_name(settings.name), settings.namespace, files), build_rayjob(settings)]
