#!/usr/bin/env bash
# The GPU check (issue 16): run on a lent GPU machine from the repository root, with the wheels that machine lacks
# in .whl/ (benchmarks/device_wheels.sh fetches them on a machine that reaches PyPI). Writes device_check.md and
# device_check.json, and each step's output, under $CHECK_OUT (default $OUT, else /tmp/device_check). Under
# 8 minutes on one H100/H200 with 16 cores.
set -uo pipefail
CHECK_OUT=${CHECK_OUT:-${OUT:-/tmp/device_check}}
mkdir -p "$CHECK_OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
fi
export PYTHONPATH=$PWD:$PYTHONPATH HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$CHECK_OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$CHECK_OUT/gpu.txt"
timeout 470 python3 benchmarks/device_check.py --out "$CHECK_OUT"
