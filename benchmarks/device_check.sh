#!/usr/bin/env bash
# The GPU check (issue 4 and 6): run on a lent GPU machine from the repository root, with the wheels that
# machine lacks in .whl/ (see the device notes in the closing comments). Writes its tables under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
nproc | tee -a "$OUT/gpu.txt"
python3 -c "import torch, av, laion_clap, librosa; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  2>&1 | grep -v -i warn | tee -a "$OUT/gpu.txt"
timeout 170 python3 benchmarks/bench_clap.py --device cuda --short "${SHORT:-300}" --long "${LONG:-2}" --batch 64 --rounds "${ROUNDS:-1}" \
  --threads "$(nproc)" --json "$OUT/bench_clap_gpu.json" 2>&1 | grep -v -i warn | tee "$OUT/bench_clap_gpu.txt"
timeout 60 python3 benchmarks/bench_clap.py --device cpu --short 40 --long 1 --batch 16 --rounds 1 --threads "$(nproc)" \
  --json "$OUT/bench_clap_cpu.json" 2>&1 | grep -v -i warn | tee "$OUT/bench_clap_cpu.txt"
# Whether loader threads keep up beside a GIL-bound forward thread on this machine's cores (no GPU needed).
timeout 90 python3 benchmarks/bench_loader.py --files 96 2>&1 | grep -v -i warn | tee "$OUT/bench_loader.txt"
