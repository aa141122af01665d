#!/usr/bin/env bash
# One call on a lent GPU machine (the `device` tool): install the carried wheels, run a benchmark, and leave in
# $OUT its JSON (<device>-<date>[-what].json, ready to commit under benchmarks/results/), the GPU clock log and, for
# FLUX.1 Kontext, the kernel tables of the profiled modes (profiles.tar.gz). Each JSON is rewritten after every mode,
# so a run cut short keeps what it measured.
#
#   bash benchmarks/gpu_check.sh [kontext|families|issue25] [the benchmark's own flags]
#
#   kontext (the default)  bench_kontext.py in the default modes below, with kernel tables (~540 s on an H100)
#   families               bench_families.py: Qwen-Image-Edit-2509, FLUX.2 [klein] 4B and 9B in lossless, fp8 and
#                          fp8+fp8_attention_cudnn (~6 min estimated on an H200); FLUX.2 [dev] alone:
#                          bash benchmarks/gpu_check.sh families --families flux2-klein-9b,flux2-dev
#   issue25                FLUX.1 Kontext's FP8 attention on both kernels (fp8, fp8+fp8_attention,
#                          fp8+fp8_attention_cudnn) and the families Qwen-Image-Edit-2509 and FLUX.2 [klein] 4B:
#                          ~6-7 min estimated on an H200 (not run yet)
#
# Here, before the call (the GPU image has torch 2.11 with its Triton, transformers, accelerate, but neither
# diffusers, peft, cache-dit nor cuDNN's Python frontend; /.whl/ is in .gitignore):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl diffusers==0.42.1 importlib_metadata cache-dit==1.5.3 peft==0.21.2 nvidia-cudnn-frontend==1.16.0
# (9.4 MB), then: run(command="bash benchmarks/gpu_check.sh issue25", carry=[".whl"], timeout_s=600)
#
# FLUX.1 Kontext's default modes: the defaults (lossless, fp8) first, so that a run cut short still holds both
# targets of issue 5, then every lossless option (+all: CUDA graphs and the VAE compile), FP8 with the VAE compile,
# FP8 with group offload, and the memory modes for 24 GB cards. Measured on an H100 (2026-11-26, 538 s for baseline
# + 9 modes): baseline ~40 s with the pipeline build; lossless ~30 s, fp8 ~22 s; lossless+all ~120 s (~85 s with
# Inductor's cache warm); fp8+fused ~17 s; offload_group ~87 s, fp8+offload_group ~65 s, offload_model ~80 s;
# lossless+fused ~50 s. On an H200 (2026-12-04): fp8+fp8_attention ~33 s, cache modes ~9-14 s. The +tune_kernels
# modes compile ~200 s each, so they run only when named:
#   bash benchmarks/gpu_check.sh --modes lossless+tune_kernels   (a later --modes replaces the default one)
# Both cards were held at their 700 W power cap (clocks_event_reasons 0x4 in gpu-clocks.csv).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
what=kontext
case "${1:-}" in kontext|families|issue25) what=$1; shift ;; esac
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv,noheader
out_dir="${OUT:-benchmarks/results}"
name=$(python3 -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))")-$(date +%F)
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
kontext() {  # $1: seconds allowed; the rest: bench_kontext.py's flags
    local limit=$1; shift
    timeout "$limit" python3 benchmarks/bench_kontext.py --warmup-steps 2 --profile-dir "$out_dir" "$@"
    echo "bench_kontext exit code $?"
}
families() {  # $1: seconds allowed; the rest: bench_families.py's flags
    local limit=$1; shift
    timeout "$limit" python3 benchmarks/bench_families.py "$@"
    echo "bench_families exit code $?"
}
case $what in
kontext)
    modes=lossless,fp8,lossless+all,fp8+fused,fp8+offload_group,offload_group,offload_model,lossless+fused
    kontext "${BENCH_TIMEOUT:-540}" --modes "$modes" --out "$out_dir/$name.json" "$@" ;;
families)
    families "${BENCH_TIMEOUT:-540}" --out "$out_dir/$name-families.json" "$@" ;;
issue25)
    # Kontext first (~150 s estimated: baseline ~40 s, kernel checks ~20 s, three modes ~30 s each), then the two
    # families that fit beside it (Qwen-Image-Edit-2509 ~125 s, FLUX.2 [klein] 4B ~85 s, estimated).
    modes=fp8,fp8+fp8_attention,fp8+fp8_attention_cudnn
    kontext 220 --modes "$modes" --out "$out_dir/$name.json"
    families "${BENCH_TIMEOUT:-300}" --families qwen-edit-2509,flux2-klein-4b --out "$out_dir/$name-families.json" \
        "$@" ;;
esac
kill "$sampler" 2>/dev/null
# The device tool returns at most 8 files from $OUT: one archive for all the kernel tables.
(cd "$out_dir" && ls profile-*.txt >/dev/null 2>&1 && tar czf profiles.tar.gz profile-*.txt && rm -f profile-*.txt)
nvidia-smi --query-gpu=clocks.sm,temperature.gpu,power.draw --format=csv,noheader
