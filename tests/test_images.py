"""The container images, checked statically (no engine needed): both Dockerfiles have the same stages, ARGs,
non-root user and entrypoint; what they install is pinned; the compose file mounts /share; the build
scripts take the host's pip settings at build time and write none into the repository.

`make image-test` builds and runs the images for real (deploy/docker/image_test.sh); CI runs it after
`make test`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

try:
    from test_deploy import DOCKER, DOCKERFILES, REPO, dockerignore_allows, instructions
except ImportError:  # pytest --import-mode=importlib
    from tests.test_deploy import DOCKER, DOCKERFILES, REPO, dockerignore_allows, instructions

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
