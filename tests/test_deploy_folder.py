"""deploy/ (the repository's folder; autolfads.deploy is tested in test_deploy_katib.py, test_deploy_rayjob.py
and test_deploy_slurm.py): the container images checked statically (no engine needed), docker-compose, and the
Kubernetes pieces (examples regenerate exactly, the kustomization builds with `kubectl kustomize`).

Both Dockerfiles have the same stages, ARGs, non-root user and entrypoint; what they install is pinned; the
compose file mounts /share; the build scripts take the host's pip settings at build time and write none into the
repository. `make image-test` builds and runs the images for real (deploy/docker/image_test.sh); CI runs it after
`make test`. The slow test runs the images' install sequence (deploy/docker/install.sh) in a fresh virtual
environment from a copy of the build context that .dockerignore lets through, then uses the installed `autolfads`
entry point the way `docker run` does.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

try:
    from conftest import cli_env, tiny_overrides
except ImportError:  # pytest --import-mode=importlib
    from tests.conftest import cli_env, tiny_overrides


REPO = Path(__file__).resolve().parents[1]


DOCKER = REPO / "deploy" / "docker"


KUBE = REPO / "deploy" / "kubernetes"


DOCKERFILES = [DOCKER / "Dockerfile.cpu", DOCKER / "Dockerfile.gpu"]


# ---------------------------------------------------------------------------------------------- Dockerfiles


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def dockerignore_allows(path: str) -> bool:
    """Docker's rule: the last .dockerignore pattern matching the path or one of its parents decides."""
    allowed = True
    parts = path.split("/")
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.replace("**/", "")) for c in candidates):
            allowed = negate
    return allowed


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_only_existing_paths_inside_the_build_context(dockerfile):
    copies = [args for op, args in instructions(dockerfile) if op == "COPY" and not args.startswith("--from")]
    assert copies
    for args in copies:
        *sources, _ = shlex.split(args)
        for source in sources:
            assert (REPO / source).exists(), f"{dockerfile.name} copies {source}, which does not exist"
            assert dockerignore_allows(source), f"{source} is excluded from the build context by .dockerignore"
    install = next(args for op, args in instructions(dockerfile) if op == "RUN" and "install.sh" in args)
    assert "/build/deploy/docker/install.sh" in install and "SRC=/build" in install


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_multi_stage_non_root_with_the_autolfads_entrypoint(dockerfile):
    steps = instructions(dockerfile)
    stages = [args for op, args in steps if op == "FROM"]
    assert len(stages) == 2 and stages[0].endswith("AS build")
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    assert ("COPY", "--from=build /opt/autolfads /opt/autolfads") in final  # the runtime stage gets the venv only
    (user,) = [args for op, args in final if op == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root USER (Kubernetes' runAsNonRoot can check it)"
    assert ("ENTRYPOINT", '["autolfads"]') in final
    assert not any(op == "RUN" and "pip" in args for op, args in final), "no installs in the runtime stage"
    env = next(args for op, args in final if op == "ENV")
    assert env.startswith("PATH=/opt/autolfads/bin:$PATH")
    # KubeRay runs `bash -lc`: /etc/profile resets PATH, so the venv must come back through profile.d.
    assert any(op == "RUN" and "/etc/profile.d/" in args and "/opt/autolfads/bin" in args for op, args in final)


@pytest.mark.parametrize("dockerfile, build", [(DOCKERFILES[0], "cpu"), (DOCKERFILES[1], "cu")], ids=["cpu", "gpu"])
def test_versions_are_pinned(dockerfile, build):
    args = dict(a.split("=", 1) for op, a in instructions(dockerfile) if op == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", args["PYTHON_IMAGE"])
    assert re.fullmatch(rf"torch==\d+\.\d+\.\d+\+{build}\d*", args["TORCH"]), "torch pinned with its build"
    assert args["TORCH_INDEX"].endswith(args["TORCH"].split("+")[1])


def test_requirements_pin_every_dependency_exactly():
    pins = {}
    for name in ("requirements.txt", "requirements-ray.txt"):
        for line in (DOCKER / name).read_text().splitlines():
            if line and not line.startswith("#"):
                match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[a-z]+\])?==[0-9][^ ]*", line)
                assert match, f"{name}: {line!r} is not pinned exactly"
                pins[match.group(1).lower().replace("_", "-")] = name
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=\[ ]", requirement)[0].lower()
        if name != "torch":  # installed on its own, from PyTorch's index for the chosen build
            assert pins.get(name) == "requirements.txt", f"{name} (a dependency of autolfads) is not pinned"
    assert pins["ray"] == "requirements-ray.txt"


def test_compose_runs_train_with_a_gpu_profile():
    compose = yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"train", "train-gpu"}
    for service in services.values():
        assert service["command"][0] == "train" and service["volumes"][0].endswith(":/share")
        context = (DOCKER / service["build"]["context"]).resolve()
        assert context == REPO and (context / service["build"]["dockerfile"]).is_file()
    assert "profiles" not in services["train"] and services["train-gpu"]["profiles"] == ["gpu"]
    devices = services["train-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert services["train-gpu"]["build"]["dockerfile"].endswith("Dockerfile.gpu")
    # jobs run side by side under their own project names (-p NAME): nothing in the file fixes a name
    assert "name" not in compose and not any("container_name" in service for service in services.values())


@pytest.mark.slow
def test_image_install_sequence_gives_a_working_autolfads(tmp_path, lorenz_file):
    """install.sh in a fresh venv, from the files .dockerignore lets into the build context (the CPU build;
    torch from pip's configured sources instead of PyTorch's index, which is not reachable here). Then the
    entry point, run the way `docker run IMAGE train --data /share/data ...` runs it."""
    context = tmp_path / "context"
    for source in ("pyproject.toml", "README.md", "src", "deploy/docker"):
        target = context / source
        if (REPO / source).is_dir():
            # deploy/docker/host/ holds what `make image` copied from this host (a torch wheel among them).
            shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "host"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / source, target)
    env = {
        **cli_env(),
        "VENV": str(tmp_path / "venv"),
        "TORCH": "torch==2.13.0+cpu",
        "TORCH_INDEX": "",
        "SRC": str(context),
        "PYTHON": sys._base_executable,
    }
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        ["sh", str(context / "deploy/docker/install.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    autolfads = tmp_path / "venv" / "bin" / "autolfads"
    version = subprocess.run([autolfads, "--version"], capture_output=True, text=True, env=cli_env())
    assert version.returncode == 0 and version.stdout.startswith("autolfads ")

    share = tmp_path / "share"
    (share / "data").mkdir(parents=True)
    shutil.copy(lorenz_file, share / "data" / "lorenz.h5")
    (share / "data" / "config.yaml").write_text(yaml.safe_dump({"model": {"gen_dim": 16}}))
    run = subprocess.run([autolfads, "train", "--data", share / "data", "--checkpoint", share / "output",
                          "--config-file", share / "data" / "config.yaml", "--epochs", "2", *tiny_overrides()],
                         capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "smth_val_nll_heldin=" in run.stdout and (share / "output" / "last.ckpt").is_file()
    # It is the installed copy that ran, not this checkout.
    where = subprocess.run(
        [tmp_path / "venv" / "bin" / "python", "-c", "import autolfads; print(autolfads.__file__)"],
        capture_output=True,
        text=True,
    )
    assert str(tmp_path / "venv") in where.stdout
    installed = Path(where.stdout.strip()).parent
    assert (installed / "model" / "csrc" / "loops.cpp").is_file(), "the compiled loops' source is package data"


# ------------------------------------------------------------------------------------------ deploy/kubernetes

# The commands that wrote deploy/kubernetes/examples/ (also in deploy/kubernetes/README.md).
EXAMPLES = {
    "lorenz-katib.yaml": "kubeflow katib --name lorenz --image ghcr.io/your-lab/autolfads:0.1.0 "
    "--data-pvc autolfads-data --data-subpath lorenz --config-file examples/configs/lorenz.yaml --population 20 "
    "--epochs-per-generation 50",
    "mc-maze-small-katib.yaml": "kubeflow katib --name mc-maze-small --image ghcr.io/your-lab/autolfads:0.1.0-gpu "
    "--data-pvc autolfads-data --data-subpath mc_maze_small --config-file examples/configs/mc_maze_small.yaml "
    "--population 20 --epochs-per-generation 50 --gpus 1 --cpus 4 --memory 8Gi",
    "lorenz-rayjob.yaml": "kubeflow rayjob --name lorenz-ray --image ghcr.io/your-lab/autolfads:0.1.0-ray "
    "--pvc autolfads-data --data-subpath lorenz --config-file examples/configs/lorenz.yaml --population 16 "
    "--epochs-per-generation 25 "
    "--workers 4 --cpus-per-worker 4",
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_are_what_the_generator_writes_today(name, tmp_path, monkeypatch):
    from autolfads.cli import main

    monkeypatch.chdir(REPO)
    assert main([*shlex.split(EXAMPLES[name]), "-o", str(tmp_path / name)]) == 0
    assert (tmp_path / name).read_text() == (KUBE / "examples" / name).read_text(), (
        f"deploy/kubernetes/examples/{name} is stale; regenerate it: autolfads {EXAMPLES[name]} -o "
        f"deploy/kubernetes/examples/{name}"
    )


def test_nlb_example_is_sized_for_mc_maze_small():
    config_map, experiment = yaml.safe_load_all((KUBE / "examples" / "mc-maze-small-katib.yaml").read_text())
    model = yaml.safe_load(config_map["data"]["config.yaml"])["model"]
    assert (model["data_dim"], model["cs_dim"], model["seq_len"], model["fp_len"]) == (142, 35, 180, 40)
    assert {"val_co_bps", "val_fp_bps"} <= set(experiment["spec"]["objective"]["additionalMetricNames"])
    container = experiment["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_examples_use_the_lab_volume():
    claim = yaml.safe_load((KUBE / "data-pvc.yaml").read_text())
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    stage = yaml.safe_load((KUBE / "staging-pod.yaml").read_text())
    assert stage["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    for name in EXAMPLES:
        assert f"claimName: {claim['metadata']['name']}" in (KUBE / "examples" / name).read_text()


def test_katib_config_gives_pbt_an_rwx_volume_and_the_images_user():
    config_map = yaml.safe_load((KUBE / "katib-config.yaml").read_text())
    assert (config_map["metadata"]["name"], config_map["metadata"]["namespace"]) == ("katib-config", "kubeflow")
    katib_config = yaml.safe_load(config_map["data"]["katib-config.yaml"])
    assert katib_config["kind"] == "KatibConfig" and katib_config["init"]["certGenerator"]["enable"] is True
    (pbt,) = [s for s in katib_config["runtime"]["suggestions"] if s["algorithmName"] == "pbt"]
    claim = pbt["persistentVolumeClaimSpec"]
    assert claim["accessModes"] == ["ReadWriteMany"] and claim["storageClassName"]
    assert pbt["podSecurityContext"]["runAsUser"] == 1000  # the images' uid: trials can write the folders it makes
    assert {c["kind"] for c in katib_config["runtime"]["metricsCollectors"]} >= {"StdOut"}
    images = [s["image"] for s in katib_config["runtime"]["suggestions"]] + [
        c["image"] for c in katib_config["runtime"]["metricsCollectors"]
    ]
    assert all(image.endswith(":v0.19.0") for image in images), "one pinned Katib release"


def test_kustomization_builds_offline():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "kubectl is not on PATH: `kubectl kustomize deploy/kubernetes` was not tried (the YAML checks above ran)"
        )
    result = subprocess.run([kubectl, "kustomize", str(KUBE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    documents = {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout)}
    assert set(documents) == {"PersistentVolumeClaim", "Pod"}
    assert all("namespace" not in doc["metadata"] for doc in documents.values())  # `kubectl apply -n $NS -k` sets it
    assert documents["Pod"]["spec"]["securityContext"]["runAsUser"] == 1000


def test_standalone_katib_namespace_is_created_and_labelled():
    """Katib injects its metrics collector only into labelled namespaces; standalone Katib creates none."""
    readme = (KUBE / "README.md").read_text()
    create = readme.index("kubectl create namespace $NS")
    assert readme.index("kubectl label namespace $NS katib.kubeflow.org/metrics-collector-injection=enabled") > create
    assert readme.index("NS=autolfads") < create < readme.index("kubectl apply -n $NS -k deploy/kubernetes\n")
    assert "nfs-subdir-external-provisioner" in readme and "storageClassName: nfs-client" in readme


VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each stage (the ARGs before the first FROM form stage 0)."""
    result: list[list[tuple[str, str]]] = [[]]
    for op, args in instructions(dockerfile):
        if op == "FROM":
            result.append([])
        result[-1].append((op, args))
    return result


def arg_names(steps) -> list[str]:
    return [args.split("=", 1)[0] for op, args in steps if op == "ARG"]


def test_cpu_and_gpu_dockerfiles_share_stages_args_user_and_entrypoint():
    cpu, gpu = (stages(d) for d in DOCKERFILES)
    assert len(cpu) == len(gpu) == 3, "global ARGs, a build stage and a runtime stage"
    assert (
        [s[0] for s in cpu[1:]]
        == [s[0] for s in gpu[1:]]
        == [("FROM", "${PYTHON_IMAGE} AS build"), ("FROM", "${PYTHON_IMAGE}")]
    )
    for a, b in zip(cpu, gpu):
        assert arg_names(a) == arg_names(b)
    # The same instructions apart from torch's build (ARG defaults) and the NVIDIA variables of the GPU image.
    same = lambda steps: [(op, args) for op, args in steps if op not in ("ARG", "ENV")]  # noqa: E731
    assert [same(s) for s in cpu] == [same(s) for s in gpu]
    assert cpu[0] == gpu[0], "the same base image"
    for final in (cpu[-1], gpu[-1]):
        assert [args for op, args in final if op == "USER"] == ["1000:1000"]
        assert [args for op, args in final if op == "ENTRYPOINT"] == ['["autolfads"]']
        assert not any(op == "COPY" and "host" in args for op, args in final), (
            "the host's pip settings stay in the build stage"
        )
    gpu_env = next(args for op, args in gpu[-1] if op == "ENV")
    assert "NVIDIA_VISIBLE_DEVICES=all" in gpu_env


def test_the_runtime_stage_installs_no_build_tools():
    for dockerfile in DOCKERFILES:
        final = stages(dockerfile)[-1]
        runs = " ".join(args for op, args in final if op == "RUN")
        assert not re.search(r"\b(gcc|g\+\+|make|build-essential|pip install)\b", runs)
        assert [args for op, args in final if op == "COPY"] == ["--from=build /opt/autolfads /opt/autolfads"]


def test_dockerfiles_need_no_frontend_image_and_copy_the_host_folder():
    for dockerfile in DOCKERFILES:
        # A `# syntax=` line makes BuildKit pull a frontend image: Docker could not build offline.
        assert not dockerfile.read_text().startswith("# syntax")
        build = stages(dockerfile)[1]
        assert ("COPY", "deploy/docker/host /build/host") in build
        install = next(args for op, args in build if op == "RUN" and "install.sh" in args)
        assert install.startswith(
            "if [ -f /build/host/pip.conf ]; then export PIP_CONFIG_FILE=/build/host/pip.conf; fi"
        )
    assert dockerignore_allows("deploy/docker/host")
    # Committed: the folder and its README; ignored: what host_context.py puts there.
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/docker/host/pip.conf"], cwd=REPO)
    kept = subprocess.run(["git", "check-ignore", "-q", "deploy/docker/host/README.md"], cwd=REPO)
    assert (DOCKER / "host" / "README.md").is_file() and ignored.returncode == 0 and kept.returncode == 1


def test_torch_and_the_base_are_pinned():
    for dockerfile, build in zip(DOCKERFILES, ("cpu", "cu128")):
        args = dict(a.split("=", 1) for op, a in instructions(dockerfile) if op == "ARG" and "=" in a)
        assert args["TORCH"] == f"torch==2.13.0+{build}"
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", args["PYTHON_IMAGE"])


def test_compose_mounts_share_and_uses_the_project_version():
    compose = yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())
    train, gpu = compose["services"]["train"], compose["services"]["train-gpu"]
    for service in (train, gpu):
        assert service["volumes"] == ["${SHARE:?set SHARE to the folder holding data/}:/share"]
        assert service["command"] == [
            "train",
            "--data",
            "/share/data",
            "--checkpoint",
            "/share/output",
            "--config-file",
            "/share/data/config.yaml",
        ]
        assert service["user"] == "${AUTOLFADS_UID:-1000}:${AUTOLFADS_GID:-1000}"  # bash exports no UID/GID
    assert train["image"] == f"${{AUTOLFADS_IMAGE:-autolfads:{VERSION}}}"
    assert gpu["image"] == f"${{AUTOLFADS_GPU_IMAGE:-autolfads:{VERSION}-gpu}}"


def test_podman_settings_are_the_ones_that_work_here():
    conf = tomllib.loads((DOCKER / "podman" / "containers.conf").read_text())
    assert conf["engine"]["runtime"] == "runc"
    limits = dict(item.split("=", 1) for item in conf["containers"]["default_ulimits"])
    assert limits["nofile"] == "20000:20000"
    assert int(limits["nproc"].split(":")[0]) <= 30000


def test_scripts_are_valid_shell_and_name_no_registry():
    scripts = sorted(DOCKER.glob("*.sh"))
    assert {p.name for p in scripts} >= {"base_image.sh", "build_image.sh", "engine.sh", "image_test.sh", "install.sh"}
    for script in scripts:
        assert subprocess.run(["sh", "-n", str(script)]).returncode == 0, f"{script.name}: syntax error"
        text = script.read_text()
        assert "set -eu" in text or script.name == "engine.sh"  # engine.sh is sourced by scripts that set it
        assert not re.search(r"https?://", text), f"{script.name}: a URL (registries come from the host's settings)"
    test = (DOCKER / "image_test.sh").read_text()
    for step in (
        'run "$image" --version',
        "resumed from /share/output/last.ckpt",
        'run "$image" sample',
        'run "$image" search',
        "$compose -p",
    ):
        assert step in test, f"image_test.sh lost a step: {step}"


def test_host_context_copies_the_hosts_pip_settings(tmp_path, monkeypatch):
    """host_context.py keeps the indexes a container can reach, points `cert` and `find-links` at the copies."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\ncert = {ca}\nindex-url = https://mirror.invalid/simple\n"
                    "extra-index-url = file:///opt/elsewhere http://other.invalid/simple\n"
                    "trusted-host = other.invalid\n")  # fmt: skip
    host = tmp_path / "docker" / "host"
    script = tmp_path / "docker" / "host_context.py"
    script.parent.mkdir()
    script.write_text((DOCKER / "host_context.py").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=str(conf), PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path))  # no network: no wheel
    out = subprocess.run(
        [sys.executable, str(script), "torch==2.13.0+cpu"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "torch-wheel: no"
    written = (host / "pip.conf").read_text().splitlines()
    assert "index-url = https://mirror.invalid/simple" in written
    assert "extra-index-url = http://other.invalid/simple" in written
    assert "trusted-host = other.invalid" in written
    assert "cert = /build/host/ca.pem" in written and not any(line.startswith("find-links") for line in written)
    assert (host / "ca.pem").read_text() == ca.read_text() and not (host / "wheels").exists()
