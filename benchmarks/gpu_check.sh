#!/usr/bin/env bash
# One call on a lent GPU machine (the `device` tool): install the carried wheels, run every benchmark mode,
# and leave the JSON (<device>-<date>.json, ready to commit under benchmarks/results/) and the kernel tables of
# the profiled modes in $OUT. The JSON is rewritten after every mode, so a run cut short keeps what it measured.
#
# Here, before the call (the GPU image has torch 2.11, transformers, accelerate, but not diffusers):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib_metadata
# then: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
#
# On an H200 (2026-11-26) the default modes took about 330 s after a 30 s baseline; the two +tune_kernels modes
# compile for about 200 s each, so they run only when named: bash benchmarks/gpu_check.sh --modes lossless+tune_kernels
# (a later --modes replaces the default one).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv,noheader
out_dir="${OUT:-benchmarks/results}"
name=$(python3 -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))")
modes=lossless,fp8,fp8_tensorwise,offload_group,offload_model,first_block_cache,fp8+first_block_cache
timeout "${BENCH_TIMEOUT:-540}" python3 benchmarks/bench_kontext.py --warmup-steps 2 --profile-dir "$out_dir" \
    --modes "$modes" --out "$out_dir/${name}-$(date +%F).json" "$@"
echo "bench exit code $?"
nvidia-smi --query-gpu=clocks.sm,temperature.gpu,power.draw --format=csv,noheader
