#!/usr/bin/env bash
# One call on a lent GPU machine (the `device` tool): install the carried wheels, run every benchmark mode,
# and leave the JSON (<device>-<date>.json, ready to commit under benchmarks/results/), the GPU clock log and the
# kernel tables of the profiled modes (profiles.tar.gz) in $OUT. The JSON is rewritten after every mode, so a run
# cut short keeps what it measured.
#
# Here, before the call (the GPU image has torch 2.11 with its Triton, transformers, accelerate, but neither
# diffusers nor cache-dit; /.whl/ is in .gitignore):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib_metadata cache-dit==1.5.3
# then: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
#
# Issue 19 (FP8 attention, cache-dit's step cache; not run on a GPU yet, 5-6 minutes estimated from earlier modes):
#   bash benchmarks/gpu_check.sh --modes lossless,fp8,fp8_attention,fp8+fp8_attention,cache_static,fp8+cache_static,fp8+fp8_attention+cache_static
# The cache modes use a fixed schedule (13 of 28 steps cached): random weights never reach a cache threshold.
#
# The default modes: the defaults (lossless, fp8) first, so that a run cut short still holds both targets of issue
# 5, then every lossless option (+all: CUDA graphs and the VAE compile), FP8 with the VAE compile, FP8 with group
# offload (its weights stay off the GPU since 2026-11-26: measure its peak again), and the memory modes for 24 GB
# cards. Measured on an H100 (2026-11-26, 538 s for baseline + 9 modes): baseline ~40 s with the pipeline build;
# lossless ~30 s, fp8 ~22 s; lossless+all ~120 s (~85 s with Inductor's cache warm); fp8+fused ~17 s;
# offload_group ~87 s, fp8+offload_group ~65 s, offload_model ~80 s; lossless+fused ~50 s. The +tune_kernels modes
# compile ~200 s each, so they run only when named:
#   bash benchmarks/gpu_check.sh --modes lossless+tune_kernels   (a later --modes replaces the default one)
# Both cards were held at their 700 W power cap (clocks_event_reasons 0x4 in gpu-clocks.csv). The H100 has less
# memory bandwidth, which slows the baseline's memory-bound kernels more than the fast path's: 1.36x lossless there
# against 1.31x on the H200. Prefer run(kind="nvidia-h100-x1", ...) for the figures issue 5 asks for.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv,noheader
out_dir="${OUT:-benchmarks/results}"
name=$(python3 -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))")
# SM clock, power, temperature (and why clocks are held down, where the driver names it) once a second, with Unix
# time, to tell a slower kernel from a throttled GPU: match the JSON's "started_unix" of each mode.
fields=clocks.sm,power.draw,temperature.gpu
while :; do
    row=$(nvidia-smi --query-gpu=$fields,clocks_event_reasons.active --format=csv,noheader,nounits 2>/dev/null \
        || nvidia-smi --query-gpu=$fields --format=csv,noheader,nounits)
    echo "$(date +%s),$row"
    sleep 1
done > "$out_dir/gpu-clocks.csv" 2>/dev/null &
sampler=$!
modes=lossless,fp8,lossless+all,fp8+fused,fp8+offload_group,offload_group,offload_model,lossless+fused
timeout "${BENCH_TIMEOUT:-540}" python3 benchmarks/bench_kontext.py --warmup-steps 2 --profile-dir "$out_dir" \
    --modes "$modes" --out "$out_dir/${name}-$(date +%F).json" "$@"
echo "bench exit code $?"
kill "$sampler" 2>/dev/null
# The device tool returns at most 8 files from $OUT: one archive for all the kernel tables.
(cd "$out_dir" && tar czf profiles.tar.gz profile-*.txt && rm -f profile-*.txt)
nvidia-smi --query-gpu=clocks.sm,temperature.gpu,power.draw --format=csv,noheader
