#!/usr/bin/env bash
# Fetches into .whl/ the wheels a lent GPU machine lacks for benchmarks/device_check.sh (its image has Python 3.12,
# torch, numpy, scipy, numba, pandas, pyarrow and the rest of its list in the device notes; nothing can be fetched
# there). Not PuLP (Snakemake's ILP scheduler; the profiles use the greedy one) nor imageio-ffmpeg (the check makes
# its media without ffmpeg): together 82 MB, over what a call carries. About 50 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
PY=${PYTHON:-python3}
platforms=(--platform any)
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
  manylinux1_x86_64; do platforms+=(--platform "$p"); done
# connection_pool (a Snakemake dependency) has no wheel on PyPI: built here, pure Python.
"$PY" -m pip wheel -q --no-deps -w .whl "connection_pool==0.0.3"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d .whl \
  snakemake==9.27.1 snakemake-executor-plugin-slurm==2.6.1 snakemake-executor-plugin-slurm-jobstep==0.6.1 \
  snakemake-interface-common==1.23.0 snakemake-interface-executor-plugins==9.4.0 \
  snakemake-interface-logger-plugins==2.1.0 snakemake-interface-report-plugins==1.3.0 \
  snakemake-interface-scheduler-plugins==2.0.2 snakemake-interface-storage-plugins==4.4.1 conda-inject==1.3.2 \
  docutils==0.22.4 dpath==2.2.0 smart_open==7.7.1 humanfriendly==10.0 sqlmodel==0.0.37 SQLAlchemy==2.0.59 \
  tenacity==9.2.1 throttler==1.2.3 yte==1.9.4 argparse-dataclass==2.0.0 ConfigArgParse==1.9.0 immutables==0.21 \
  GitPython==3.2.1 gitdb==4.0.12 smmap==5.0.3 nbformat==5.11.1 fastjsonschema==2.22.3 jupyter_core==5.9.1 \
  traitlets==5.16.1 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  greenlet==3.5.6 platformdirs==4.14.9 pytz==2026.6 tzdata==2026.6 \
  av==19.0.2 soundfile==0.14.0 soxr==1.1.0 pyFFTW==0.15.1 orjson==3.13.0 jsonschema==4.26.0 \
  jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 pyloudnorm==0.2.0 future==1.0.0 \
  ffmpeg-python==0.2.0 librosa==1.0.1 pooch==1.9.0 decorator==5.3.2 cffi==2.1.1 pycparser==3.12 \
  torchlibrosa==0.1.0 laion-clap==1.1.7
du -sh .whl
