"""Kubernetes manifests for AutoLFADS: Katib Experiments (`katib`) and KubeRay RayJobs (`rayjob`).

Building a manifest is pure (settings in, plain dicts out); writing, printing and submitting are the thin
I/O helpers below, shared by both.
"""

import os
import re
from collections.abc import Iterable
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..files import write_atomic

# Where the trial/search containers find the user's config and search space (a ConfigMap, mounted read-only).
CONFIG_MOUNT = "/etc/autolfads"
# A Kubernetes name that is also a DNS label (RFC 1035): Katib Experiments and RayJobs alike.
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


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


def submit(documents: list[dict], namespace: str | None) -> list[str]:
    """Create the documents on the current kube context, in `namespace` or the context's own (needs the
    `kubeflow` extra: the kubernetes client). Deliberately thin, and not exercised by the tests (no cluster
    here): it only hands the manifests the tests check to the API server. Returns "Kind/name" of each."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise ConfigError("--submit needs the kubernetes client: pip install 'autolfads[kubeflow]'") from None
    config.load_kube_config()
    namespace = namespace or config.list_kube_config_contexts()[1]["context"].get("namespace", "default")
    created = []
    for doc in documents:
        if doc["kind"] == "ConfigMap":
            client.CoreV1Api().create_namespaced_config_map(namespace, doc)
        else:
            group, version, plural = CUSTOM_RESOURCES[(doc["apiVersion"], doc["kind"])]
            client.CustomObjectsApi().create_namespaced_custom_object(group, version, namespace, plural, doc)
        created.append(f"{doc['kind']}/{doc['metadata']['name']}")
    return created
