#!/usr/bin/env bash
# GPU check: the training-step, population and sampling benchmarks on CUDA, in a few minutes on one
# H100-class GPU. Needs a Python with CUDA torch; the project runs from src/ (nothing is installed).
# Its other needs (numpy, h5py, pydantic, pyyaml, tqdm) must be importable: carry wheels if one is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
$PY - <<'PY'
import importlib, torch
missing = [m for m in ("numpy", "h5py", "pydantic", "yaml", "tqdm") if importlib.util.find_spec(m) is None]
assert not missing, f"missing Python packages: {missing}"
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
PY
date -u +"%Y-%m-%d %H:%M UTC"
echo "== training step, fast core vs eager (batch 64) =="
timeout 180 $PY benchmarks/train_throughput.py --device cuda --batch 64 --steps 10 --rounds 3
echo "== population on one GPU vs P single-model runs =="
timeout 240 $PY benchmarks/population.py --device cuda --populations 1 4 8 20 --steps 4 --generations 5
echo "== P = 1, 8, 20, 40 on the axis; 8 processes sharing the GPU; TF32 and bf16 (issue 16) =="
timeout 300 $PY benchmarks/gpu_scaling.py --device cuda --populations 1 8 20 40 --processes 8 --steps 4 --epochs 2
echo "== posterior sampling =="
timeout 60 $PY benchmarks/sampling.py --device cuda --trials 512 2048 --max-rows 4096
