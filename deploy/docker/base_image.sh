#!/bin/sh
# Make the images' base locally, for machines where no registry serves python:3.11-slim-bookworm: Debian
# bookworm (minbase) with its Python 3.11, venv and CA certificates, made by debootstrap from the Debian
# mirror the host's apt uses, imported into the engine as NAME. Needs root (debootstrap). Reuses NAME if
# it exists.
#   usage: base_image.sh ENGINE NAME        ENGINE: podman or docker; DEBIAN_MIRROR overrides the mirror
set -eu
started=$(date +%s)
engine=$1 name=$2
if "$engine" image inspect "$name" >/dev/null 2>&1; then
    echo "base_image: reusing $name"
    exit 0
fi
# The mirror: the first non-security Debian URI in the host's apt sources (deb822 or one-line format).
mirror=${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' | grep -v security | head -n 1)}
mirror=${mirror:-$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\)[[:space:]]\+bookworm[[:space:]].*/\2/p' /etc/apt/sources.list 2>/dev/null | head -n 1)}
if [ -z "$mirror" ]; then
    echo "base_image: no Debian mirror in /etc/apt/sources.list*; set DEBIAN_MIRROR" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "base_image: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
root=$(mktemp -d /var/tmp/autolfads-base.XXXXXX)
trap 'rm -rf "$root" "$root.log"' EXIT
echo "base_image: debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -n 30 "$root.log" >&2; echo "base_image: debootstrap failed (log above)" >&2; exit 1; }
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
# An imported file system has no image config: give it the PATH and locale the Python images have.
tar -C "$root" -c . | "$engine" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$name" >/dev/null
echo "base_image: made $name in $(($(date +%s) - started)) s"
