# Sourced by build_image.sh and image_test.sh: the container engine. Docker where its engine answers, else
# Podman (these machines have no Docker engine; Podman builds and runs images as root without a daemon).
# ENGINE=docker|podman overrides the choice.
if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null 2>&1; then
        ENGINE=podman
    else
        echo "no container engine: no Docker engine answers and podman is not installed (apt-get install podman buildah runc)" >&2
        exit 1
    fi
fi
if [ "$ENGINE" = podman ]; then
    # runc and container limits that work here (see podman/containers.conf), unless the caller chose a config.
    CONTAINERS_CONF=${CONTAINERS_CONF:-$(cd "$(dirname "$0")" && pwd)/podman/containers.conf}
    export CONTAINERS_CONF
fi
