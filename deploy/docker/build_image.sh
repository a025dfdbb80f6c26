#!/bin/sh
# Build an autolfads image (see README, "Containers"), from the repository root as the build context.
#   usage: build_image.sh cpu|gpu IMAGE
# The base is the Dockerfile's PYTHON_IMAGE if the engine has it or can pull it; where no registry gives it,
# a Debian bookworm base made locally by base_image.sh (debootstrap). The host's pip settings go into the
# build through host_context.py. TORCH overrides the Dockerfile's torch (image_test.sh builds the GPU
# Dockerfile with the CPU wheel: no CUDA wheel is needed to check its instructions).
set -eu
started=$(date +%s)
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ $# -eq 2 ] && { [ "$1" = cpu ] || [ "$1" = gpu ]; } || { echo "usage: $0 cpu|gpu IMAGE" >&2; exit 2; }
dockerfile=$here/Dockerfile.$1 image=$2
. "$here/engine.sh"

torch=${TORCH:-$(sed -n 's/^ARG TORCH=//p' "$dockerfile")}
args="--build-arg TORCH=$torch"
case $(python3 "$here/host_context.py" "$torch") in
    "torch-wheel: yes") args="$args --build-arg TORCH_INDEX=" ;;  # the wheel in host/wheels; no PyTorch index
    "torch-wheel: no") ;;
    *) echo "build_image: host_context.py failed" >&2; exit 1 ;;
esac

base=$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$dockerfile")
if "$ENGINE" image inspect "$base" >/dev/null 2>&1; then
    echo "build_image: base $base (already here)"
elif timeout 300 "$ENGINE" pull "$base" >/dev/null; then
    echo "build_image: base $base (pulled)"
else
    echo "build_image: no registry gave $base (above); making a Debian bookworm base locally"
    base=localhost/autolfads-base:bookworm
    sh "$here/base_image.sh" "$ENGINE" "$base"
fi

pull=""
[ "$ENGINE" = podman ] && pull="--pull=never"  # the base is local by now; Podman would otherwise try a registry
echo "build_image: $ENGINE build -f $dockerfile -t $image ($args)"
# shellcheck disable=SC2086  # $args and $pull are lists of options
"$ENGINE" build $pull -f "$dockerfile" --build-arg "PYTHON_IMAGE=$base" $args -t "$image" "$repo"
echo "build_image: built $image in $(($(date +%s) - started)) s"
