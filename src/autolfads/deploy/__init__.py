"""Kubernetes manifests for AutoLFADS: Katib Experiments (`katib`) and KubeRay RayJobs (`rayjob`).

Building a manifest is pure (settings in, plain dicts out); writing, printing and submitting are the thin
I/O helpers below, shared by both.
"""

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, MissingDependency
from ..files import write_atomic

# Where the trial/search containers find the user's config and search space (a ConfigMap, mounted read-only).
CONFIG_MOUNT = "/etc/autolfads"
# A Kubernetes name that is also a DNS label (RFC 1035): Katib Experiments and RayJobs alike.
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Kubernetes' own rules (k8s.io/apimachinery's validation): namespaces are DNS-1123 labels (<= 63 characters),
# PersistentVolumeClaims DNS-1123 subdomains (<= 253), memory a resource.Quantity (its grammar, without a sign).
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUANTITY = re.compile(r"^\+?(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<suffix>[KMGTPE]i|[mkMGTPE]|[eE][-+]?[0-9]+)?$")


def metadata(name: str, namespace: str | None) -> dict:
    return {"name": name, **({"namespace": namespace} if namespace else {})}


def config_map_name(name: str) -> str:
    """The ConfigMap that carries the config (and search space) of the Experiment or RayJob `name`."""
    return f"{name}-config"


def config_map(name: str, namespace: str | None, files: dict[str, str]) -> dict:
    """A ConfigMap holding files verbatim (the user's YAML config and search space), so a manifest is
    self-contained: nothing has to be copied onto a volume before it is submitted."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(name, namespace), "data": dict(files)}


def cpu_quantity(cpus: float) -> str:
    """2 -> "2", 0.5 -> "500m" (Kubernetes quantities)."""
    return str(int(cpus)) if float(cpus).is_integer() else f"{round(cpus * 1000)}m"


def pod_problems(
    image: str, namespace: str | None, claims: dict[str, str], memory: dict[str, str], subpaths: dict[str, str | None]
) -> list[str]:
    """What Kubernetes would refuse in the pods' fields, one line per option (keys: the option names)."""
    problems = []
    if not image or any(char.isspace() for char in image):
        problems.append(f"--image {image!r}: give an image reference without spaces, e.g. ghcr.io/lab/autolfads:0.1.0")
    if namespace is not None and not (DNS1123_LABEL.match(namespace) and len(namespace) <= 63):
        problems.append(
            f"--namespace {namespace!r}: a namespace is lower-case letters, digits and '-', starting and ending with "
            "a letter or digit, at most 63 characters (a DNS-1123 label)"
        )
    for option, claim in claims.items():
        if not (DNS1123_SUBDOMAIN.match(claim) and len(claim) <= 253):
            problems.append(
                f"{option} {claim!r}: a PersistentVolumeClaim name is lower-case letters, digits, '-' and '.', "
                "starting and ending with a letter or digit, at most 253 characters (a DNS-1123 subdomain)"
            )
    problems += [problem for option, value in memory.items() if (problem := memory_problem(option, value))]
    for option, path in subpaths.items():
        if path is not None and (path.startswith("/") or ".." in path.split("/")):
            problems.append(f"{option} {path!r}: a path inside the volume, relative and without '..'")
    return problems


def memory_problem(option: str, value: str) -> str | None:
    """Why `value` is not an amount of memory Kubernetes accepts (None if it is)."""
    match = QUANTITY.match(value)
    if match is None:
        return (
            f"{option} {value!r}: expected a Kubernetes quantity, a number with one of the suffixes Ki Mi Gi Ti Pi "
            "Ei (powers of 1024), k M G T P E (powers of 1000) or an exponent, e.g. 4Gi"
        )
    if float(match["number"]) == 0:
        return f"{option} {value!r}: must be more than 0"
    if match["suffix"] == "m":  # Kubernetes takes it as thousandths of a byte: no pod could start
        return f"{option} {value!r}: 'm' means thousandths of a byte; did you mean {match['number']}Mi?"
    return None


def read_text(path: str | os.PathLike[str], what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the {what}: {err}") from None


# Strings Kubernetes' YAML parser would read as numbers (PyYAML leaves "1e-05" unquoted: it needs a dot).
NUMBER_LIKE = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")


class _Dumper(yaml.SafeDumper):
    def represent_str(self, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else "'" if NUMBER_LIKE.match(value) else None
        return self.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _Dumper.represent_str)


def to_yaml(documents: Iterable[dict], header: str = "") -> str:
    """A multi-document YAML stream, keys in the order they were built (as kubectl users read them); files
    embedded in ConfigMaps as literal blocks, number-like strings quoted."""
    dump = [yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120) for doc in documents]
    return header + "---\n".join(dump)


def write_manifest(path: str | os.PathLike[str], text: str) -> Path:
    """Write the manifests' YAML atomically (files.write_atomic): readers never see half a manifest."""
    try:
        return write_atomic(path, text)
    except OSError as err:
        raise ConfigError(f"{path}: cannot write the manifest: {err}") from None


# apiVersion/kind -> the custom resource's (group, version, plural), for CustomObjectsApi.
CUSTOM_RESOURCES = {
    ("kubeflow.org/v1beta1", "Experiment"): ("kubeflow.org", "v1beta1", "experiments"),
    ("ray.io/v1", "RayJob"): ("ray.io", "v1", "rayjobs"),
}


@dataclass(frozen=True)
class Cluster:
    """The current kube context: where `--submit` creates the manifests."""

    client: Any  # the kubernetes.client module
    namespace: str

    def create(self, documents: list[dict]) -> list[str]:
        """Create the documents; returns "Kind/name" of each. Deliberately thin, and not exercised by the tests
        (no cluster here): it only hands the manifests the tests check to the API server."""
        from urllib3.exceptions import HTTPError

        created = []
        for doc in documents:
            try:
                self._create(doc)
            except (self.client.ApiException, HTTPError) as err:
                done = f" (created before it: {', '.join(created)})" if created else ""
                reason = f"{err.status} {err.reason}" if isinstance(err, self.client.ApiException) else str(err)
                raise ConfigError(
                    f"--submit: the cluster refused {doc['kind']}/{doc['metadata']['name']} in namespace "
                    f"{self.namespace}: {reason}{done}"
                ) from None
            created.append(f"{doc['kind']}/{doc['metadata']['name']}")
        return created

    def _create(self, doc: dict) -> None:
        if doc["kind"] == "ConfigMap":
            self.client.CoreV1Api().create_namespaced_config_map(self.namespace, doc)
        else:
            group, version, plural = CUSTOM_RESOURCES[(doc["apiVersion"], doc["kind"])]
            self.client.CustomObjectsApi().create_namespaced_custom_object(group, version, self.namespace, plural, doc)


def connect(namespace: str | None) -> Cluster:
    """The current kube context (needs the `kubeflow` extra: the kubernetes client), in `namespace` or the
    context's own; checked before anything is written, so a missing client or kube config is one line."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise MissingDependency("--submit needs the kubernetes client: pip install 'autolfads[kubeflow]'") from None
    try:
        config.load_kube_config()
        context = config.list_kube_config_contexts()[1]["context"]
    except (config.ConfigException, OSError, yaml.YAMLError) as err:
        problem = " ".join(str(err).split())
        raise ConfigError(
            f"--submit: no usable kube config ({problem}); point KUBECONFIG at one, or write the manifest with "
            "-o FILE and create it later with kubectl apply -f FILE"
        ) from None
    return Cluster(client, namespace or context.get("namespace", "default"))
