"""deploy/rayjob.py (`autolfads kubeflow rayjob`): the RayJob manifest against the RayJob CRD's schema, its
resources, members packed per trial as the Ray search does, and the Ray version of the image."""

from __future__ import annotations

import copy
import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from autolfads.cli import build_parser
from autolfads.deploy.rayjob import RAY_VERSION, RayJobSettings, rayjob_documents
from autolfads.errors import ConfigError
from conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[1]


SHARED_SCHEMAS = REPO.parent / "shared" / "reference" / "schemas"


RAYJOB_SCHEMA = REPO / "tests" / "data" / "rayjob-v1-schema.json"


LORENZ = REPO / "examples" / "configs" / "lorenz.yaml"


TINY_KATIB_CONFIG = {
    "model": {
        key.split(".")[1]: value
        for key, value in zip(tiny_overrides()[::2], tiny_overrides()[1::2])
        if key.startswith("model.")
    }
}


# ---------------------------------------------------------------------------------------------------- RayJob


def ray_settings(**changes) -> RayJobSettings:
    values = dict(name="lorenz-ray", image="ghcr.io/lab/autolfads:0.1.0-ray", pvc="autolfads-data",
                  config_text=LORENZ.read_text(), population=8, epochs_per_generation=5, workers=2,
                  cpus_per_worker=4, cpus_per_member=2)  # fmt: skip
    return RayJobSettings(**{**values, **changes})


def strict(schema):
    """Kubernetes' strict field validation: an object that lists its properties accepts no others."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def rayjob_validator():
    import jsonschema

    schema = strict(json.loads(RAYJOB_SCHEMA.read_text()))
    schema.pop("$comment")
    return jsonschema.Draft7Validator(schema)


def rayjob_of(documents: list[dict]) -> dict:
    (rayjob,) = [d for d in documents if d["kind"] == "RayJob"]
    return rayjob


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {
            "gpus_per_worker": 1,
            "gpus_per_member": 0.5,
            "namespace": "lab",
            "space_text": "lr_init: {low: 1.0e-4, high: 1.0e-2, log: true}\n",
        },
    ],
)
def test_rayjob_validates_against_the_rayjob_crd_schema(rayjob_validator, changes):
    rayjob = rayjob_of(rayjob_documents(ray_settings(**changes)))
    errors = sorted(rayjob_validator.iter_errors(rayjob), key=str)
    assert errors == [], [e.message for e in errors]
    broken = copy.deepcopy(rayjob)
    broken["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replica"] = 2
    assert not rayjob_validator.is_valid(broken)


def test_rayjob_runs_a_ray_search_on_a_cluster_with_a_shared_volume():
    config_map, rayjob = rayjob_documents(ray_settings(gpus_per_worker=1, gpus_per_member=0.5))
    spec = rayjob["spec"]
    args, overrides = build_parser().parse_known_args(shlex.split(spec["entrypoint"])[1:])
    assert shlex.split(spec["entrypoint"])[0] == "autolfads" and overrides == []
    assert (args.command, args.backend, args.address, args.population, args.epochs_per_generation) == (
        "search",
        "ray",
        "auto",
        8,
        5,
    )
    assert (args.cpus_per_member, args.gpus_per_member) == (2.0, 0.5)
    assert str(args.workdir) == "/share/runs/lorenz-ray" and str(args.data) == "/share/data"
    assert (
        str(args.config_file) == "/etc/autolfads/config.yaml"
        and config_map["data"]["config.yaml"] == LORENZ.read_text()
    )
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == RAY_VERSION and spec["shutdownAfterJobFinishes"] is True
    head, (workers,) = cluster["headGroupSpec"], cluster["workerGroupSpecs"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # members run on workers only
    assert workers["replicas"] == 2
    worker = workers["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"] == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": 1}
    for group in (head, workers):
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
        assert {"name": "share", "persistentVolumeClaim": {"claimName": "autolfads-data"}} in pod["volumes"]
        assert {"name": "share", "mountPath": "/share"} in pod["containers"][0]["volumeMounts"]


def test_ray_version_matches_the_image_pin():
    pins = (REPO / "deploy" / "docker" / "requirements-ray.txt").read_text()
    assert re.search(rf"^ray\[tune\]=={re.escape(RAY_VERSION)}$", pins, re.M), (
        "rayVersion must be the Ray of the ray image"
    )


def test_rayjob_bad_resources_are_explained():
    with pytest.raises(ConfigError, match=r"--cpus-per-member \(8\) must fit"):
        ray_settings(cpus_per_member=8)
    with pytest.raises(ConfigError, match="--gpus-per-member"):
        ray_settings(gpus_per_member=0.5)


def test_rayjob_packs_members_per_trial_as_the_ray_search_does():
    """--members-per-trial k: the job's search trains k members per Ray trial on one axis, the group sharing
    --gpus-per-trial; the group must fit one worker pod."""
    _, rayjob = rayjob_documents(
        ray_settings(gpus_per_worker=1, cpus_per_member=1, members_per_trial=4, gpus_per_trial=1)
    )
    args, overrides = build_parser().parse_known_args(shlex.split(rayjob["spec"]["entrypoint"])[1:])
    assert overrides == []
    assert (args.members_per_trial, args.gpus_per_trial, args.cpus_per_trial) == (4, 1.0, None)
    default = build_parser().parse_known_args(
        shlex.split(rayjob_of(rayjob_documents(ray_settings()))["spec"]["entrypoint"])[1:]
    )[0]
    assert (default.members_per_trial, default.cpus_per_trial, default.gpus_per_trial) == (1, None, None)
    with pytest.raises(ConfigError, match=r"--cpus-per-member x --members-per-trial \(8\) must fit"):
        ray_settings(members_per_trial=4)  # 4 members x 2 CPUs on workers of 4 CPUs
    with pytest.raises(ConfigError, match=r"--gpus-per-trial \(2\) must fit in a worker's --gpus-per-worker \(1\)"):
        ray_settings(gpus_per_worker=1, members_per_trial=2, gpus_per_trial=2)
    with pytest.raises(ConfigError, match=r"--members-per-trial must be between 1 and the population \(8\), got 9"):
        ray_settings(members_per_trial=9, cpus_per_trial=4)


def test_in_repo_rayjob_schema_is_the_trimmed_crd():
    """Provenance: the schema in tests/data is exactly what tests/data/trim_rayjob_crd.py makes of the CRD."""
    source = SHARED_SCHEMAS / "kuberay-rayjob-crd.yaml"
    if not source.exists():
        pytest.skip(f"{source} is not here (a user's clone has no ../shared); the in-repo copy was still used above")
    sys.path.insert(0, str(REPO / "tests" / "data"))
    try:
        from trim_rayjob_crd import trimmed
    finally:
        sys.path.pop(0)
    assert json.loads(RAYJOB_SCHEMA.read_text()) == trimmed(source)
