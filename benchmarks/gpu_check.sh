#!/usr/bin/env bash
# One call on a lent GPU machine (the `device` tool): install the carried wheels, run every benchmark mode,
# and leave the JSON in $OUT, named <device>-<date>.json, ready to commit under benchmarks/results/.
#
# Here, before the call (the GPU image has torch 2.11, transformers, accelerate, but not diffusers):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib_metadata
# then: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
name=$(python3 -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))")
out="${OUT:-benchmarks/results}/${name}-$(date +%F).json"
timeout 500 python3 benchmarks/bench_kontext.py --out "$out" "$@"
