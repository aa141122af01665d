"""Two questions the throughput benchmark raised on an H200, answered in about a minute of GPU time.

    python benchmarks/gpu_diagnostics.py --out "$OUT/gpu-diagnostics.json"

``power``: does a GEMM at FLUX's MLP shape slow down under sustained load? The benchmark's clock log showed the
H200 at its power cap (clocks_event_reasons 0x4) in every mode, with the fast paths at lower SM clocks than the
plain-diffusers baseline. This runs one GEMM back to back for ``--seconds`` and reports TFLOP/s and the SM clock in
each half-second window.

``compile_numerics``: how far each way of compiling moves a transformer's output. With the whole transformer
compiled and replayed as CUDA graphs, the benchmark measured a relative L2 difference of 0.20 from the baseline
after one step, against 0.015 with regional compilation. This builds FLUX.1 Kontext at full width but only
``--double``/``--single`` blocks (random weights), takes a float32 eager output as the reference, and compares bf16
eager, regional compilation, whole-model compilation, and whole-model compilation with CUDA graphs (three calls of
each, so a replay that differs from its recording shows).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from typing import Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_kontext import (  # noqa: E402
    POOLED_DIM,
    TEXT_DIM,
    TEXT_TOKENS,
    TRANSFORMER,
    failure,
    relative_l2,
    write,
)
from diffusers import FluxTransformer2DModel  # noqa: E402

from dataflow.serving.diffusers.speed.graphed_forward import GraphedForward  # noqa: E402


def sm_clock_mhz() -> int:
    out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=False).stdout
    return int(out.split()[0]) if out.strip() else -1


def power(seconds: float, tokens: int = 8704, dim: int = 3072, hidden: int = 12288) -> dict:
    """TFLOP/s and SM clock per half-second window of one GEMM run back to back."""
    x = torch.randn(tokens, dim, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(hidden, dim, device="cuda", dtype=torch.bfloat16)
    flop = 2 * tokens * dim * hidden
    windows, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        start, count = torch.cuda.Event(enable_timing=True), 0
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.5:
            for _ in range(20):
                torch.matmul(x, w.t())
            count += 20
            torch.cuda.synchronize()
        stop.record()
        stop.synchronize()
        ms = start.elapsed_time(stop)
        windows.append({"tflops": round(flop * count / ms / 1e9, 1), "sm_mhz": sm_clock_mhz()})
    return {"gemm": f"{tokens}x{dim} @ {dim}x{hidden} bf16", "windows": windows}


def reduced_transformer(double: int, single: int) -> FluxTransformer2DModel:
    torch.manual_seed(0)
    config = dict(TRANSFORMER, num_layers=double, num_single_layers=single)
    with torch.device("cuda"):
        return FluxTransformer2DModel(**config).eval()


def step_inputs(dtype: torch.dtype, side: int = 64) -> dict:
    """One Kontext step at 1024x1024: 4,096 output + 4,096 reference latent tokens and 512 text tokens."""
    generator = torch.Generator("cpu").manual_seed(1)
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    grid = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float()
    reference = grid.clone()
    reference[:, 0] = 1
    tensors = dict(hidden_states=torch.randn(1, 2 * side * side, 64, generator=generator),
                   encoder_hidden_states=torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=generator),
                   pooled_projections=torch.randn(1, POOLED_DIM, generator=generator))
    inputs = {k: v.to("cuda", dtype) for k, v in tensors.items()}
    inputs.update(timestep=torch.tensor([0.9], device="cuda", dtype=dtype),
                  guidance=torch.tensor([2.5], device="cuda", dtype=torch.float32),
                  img_ids=torch.cat([grid, reference]).to("cuda"), txt_ids=torch.zeros(TEXT_TOKENS, 3, device="cuda"),
                  return_dict=False)
    return inputs


def compile_numerics(double: int, single: int) -> dict:
    model = reduced_transformer(double, single)
    with torch.inference_mode():
        reference = model(**step_inputs(torch.float32))[0].float()
    model = model.to(torch.bfloat16)
    inputs = step_inputs(torch.bfloat16)

    def regional(m):
        m.compile_repeated_blocks(fullgraph=True)

    def whole(m):
        m.forward = torch.compile(m.forward, fullgraph=True)

    def graphed(m):
        m.forward = GraphedForward(m.forward, dict(fullgraph=True, mode="reduce-overhead"))

    result = {"blocks": f"{double} double + {single} single, full width, random weights",
              "reference": "float32 eager"}
    for name, prepare in (("eager", None), ("regional", regional), ("whole", whole), ("whole+cuda_graphs", graphed)):
        torch._dynamo.reset()
        variant = copy.deepcopy(model)
        if prepare:
            prepare(variant)
        outputs, started = [], time.perf_counter()
        with torch.inference_mode():
            for _ in range(3):
                outputs.append(variant(**inputs)[0].float().clone())
        result[name] = {"rel_l2_vs_fp32": [round(relative_l2(o, reference), 5) for o in outputs],
                        "rel_l2_vs_first_call": [round(relative_l2(o, outputs[0]), 6) for o in outputs[1:]],
                        "seconds_3_calls": round(time.perf_counter() - started, 1)}
        print(name, json.dumps(result[name]), file=sys.stderr)
        del variant
        torch.cuda.empty_cache()
    return result


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--seconds", type=float, default=12.0, help="length of the sustained GEMM run")
    parser.add_argument("--double", type=int, default=2)
    parser.add_argument("--single", type=int, default=4)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for name, check in (("compile_numerics", lambda: compile_numerics(args.double, args.single)),
                        ("power", lambda: power(args.seconds))):
        try:
            result[name] = check()
        except Exception as exc:  # one failed check must not cost the other
            result[name] = {"error": failure(exc, 2000)}
        write(result, args.out)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
