#!/bin/sh
# The images' install sequence. The Dockerfiles' build stage runs it, and tests/test_deploy_folder.py runs it in a
# fresh virtual environment from a copy of the build context, so what the tests install is what the images do:
# pinned torch, the pinned dependencies, then autolfads itself without resolving anything more, then a check.
#   VENV         the virtual environment to create (/opt/autolfads in the images)
#   TORCH        torch pinned with its build: torch==2.13.0+cpu, torch==2.13.0+cu128
#   TORCH_INDEX  PyTorch's wheel index for that build (empty: only pip's configured indexes)
#   EXTRAS       "ray": also Ray Tune (requirements-ray.txt), for `autolfads search --backend ray`
#   SRC          the autolfads source: pyproject.toml, README.md and src/
#   PYTHON       the interpreter of the environment (default python3: the image's)
set -eu
here=$(dirname "$0")
"${PYTHON:-python3}" -m venv "$VENV"
pip="$VENV/bin/python -m pip --disable-pip-version-check"
requirements="-r $here/requirements.txt"
if [ "${EXTRAS:-}" = ray ]; then requirements="$requirements -r $here/requirements-ray.txt"; fi
$pip install ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} "$TORCH" $requirements
$pip install --no-deps "$SRC"
$pip check
