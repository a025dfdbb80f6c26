"""Put the host's pip settings into the image build context, deploy/docker/host/ (git-ignored).

A build container sees neither the host's pip configuration nor its CA certificates, so on a machine whose
package index sits behind its own certificate authority or a local mirror, pip in the build fails. This
copies, at build time, what pip in the build needs from the host, and nothing is written into the repository:

  host/ca.pem    the CA bundle the host's pip uses (its `cert` setting, else PIP_CERT / SSL_CERT_FILE, else
                 the system bundle), when there is one
  host/pip.conf  the host's index settings (index-url, extra-index-url, trusted-host, timeout) that a
                 container can reach (http/https; file:// indexes and find-links on the host's disk cannot be
                 seen from the build), `cert` pointing at host/ca.pem, `find-links` at host/wheels
  host/wheels/   the torch wheel asked for (e.g. torch==2.13.0+cpu), if the host's pip finds it (a wheel on
                 the host's disk or its index); then the build takes torch from there instead of PyTorch's
                 index. The script prints `torch-wheel: yes` or `torch-wheel: no`.

The Dockerfiles' build stage sets PIP_CONFIG_FILE to host/pip.conf; the runtime stage never sees these files.
usage: python3 deploy/docker/host_context.py TORCH_REQUIREMENT
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HOST = Path(__file__).resolve().parent / "host"
IN_BUILD = "/build/host"  # where the Dockerfiles copy HOST
KEYS = ("index-url", "extra-index-url", "trusted-host", "timeout", "default-timeout", "cert")


def pip_settings() -> dict[str, str]:
    """The host's pip settings as `pip config list` reports them (the files merged, then PIP_* variables).
    pip's precedence: the [global] section, then [install], then the environment."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    rank = {"global": 0, "install": 1, ":env:": 2}
    found: dict[str, tuple[int, str]] = {}
    for line in out.splitlines():
        name, _, value = line.partition("=")
        section, _, key = name.rpartition(".")
        key = "timeout" if key == "default-timeout" else key
        if key in KEYS and section in rank and rank[section] >= found.get(key, (-1, ""))[0]:
            found[key] = (rank[section], value.strip().strip("'\""))
    return {key: value for key, (_, value) in found.items()}


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(torch: str) -> int:
    HOST.mkdir(exist_ok=True)
    settings = pip_settings()
    conf = ["[global]"]
    for key in ("index-url", "extra-index-url", "trusted-host"):
        # Only what the build container can reach: indexes on the host's disk are not in the build context.
        kept = [
            v for v in settings.get(key, "").split() if key == "trusted-host" or v.startswith(("http://", "https://"))
        ]
        if kept:
            conf.append(f"{key} = {' '.join(kept)}")
    if "timeout" in settings:
        conf.append(f"timeout = {settings['timeout']}")
    ca = next((c for c in (settings.get("cert"), os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                           "/etc/ssl/certs/ca-certificates.crt") if c and Path(c).is_file()), None)  # fmt: skip
    if ca:
        write_atomically(HOST / "ca.pem", Path(ca).read_bytes())
        conf.append(f"cert = {IN_BUILD}/ca.pem")
    elif (HOST / "ca.pem").exists():
        (HOST / "ca.pem").unlink()

    # The torch wheel: pip with the host's full configuration (its disk included) either finds it or not.
    wheels = HOST / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                              "--python-version", "3.11", "-d", str(wheels), torch],
                             capture_output=True, text=True)  # fmt: skip
    found = fetched.returncode == 0 and any(wheels.glob("torch-*.whl"))
    if found:
        conf.append(f"find-links = {IN_BUILD}/wheels")
    else:
        shutil.rmtree(wheels, ignore_errors=True)
        print(
            f"host_context: the host's pip has no {torch} wheel; the build takes it from PyTorch's index",
            file=sys.stderr,
        )
    write_atomically(HOST / "pip.conf", ("\n".join(conf) + "\n").encode())
    print(f"torch-wheel: {'yes' if found else 'no'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
