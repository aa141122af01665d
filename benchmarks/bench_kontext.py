"""Throughput of FLUX.1 Kontext editing: plain diffusers against this project's serving, in one process.

    python benchmarks/bench_kontext.py                 # GPU: real FLUX.1-Kontext-dev shape, 1024x1024, 28 steps
    python benchmarks/bench_kontext.py --tiny          # CPU: tiny model, parity check (lossless <= 0.02)

The pipeline is built at the real shape with random weights (a step costs the same whatever the weights are), so
nothing is downloaded. The text encoders are skipped: every run passes the same prompt embeddings. The baseline is
``FluxKontextPipeline`` called as DataFlow-MM calls it; each mode then runs ``FluxKontextServing`` on a freshly
built pipeline with the same weights seed, input image and latent noise. Prints one JSON line; ``--out`` also
writes it (with the command) to a file, e.g. ``benchmarks/results/<device>-<date>.json``.

Compare at 1024x1024: there both snap the reference image to the same preferred Kontext resolution. At other sizes
the serving scales the reference to the output area while plain diffusers keeps it near one megapixel, so the two
do different work.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from typing import Callable, Optional

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import diffusers  # noqa: E402
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline  # noqa: E402
from diffusers import FluxTransformer2DModel  # noqa: E402
from PIL import Image  # noqa: E402

from dataflow.core.request import EditRequest  # noqa: E402
from dataflow.core.seeding import image_seed  # noqa: E402
from dataflow.serving.acceleration import Acceleration  # noqa: E402
from dataflow.serving.flux_kontext_serving import FluxKontextServing  # noqa: E402

# FLUX.1-Kontext-dev's shapes, from its published configs.
TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                   num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                   axes_dims_rope=(16, 56, 56))
VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
           up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
           latent_channels=16, norm_num_groups=32, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
           use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True)
SCHEDULER = dict(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
                 num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True)
TEXT_TOKENS, TEXT_DIM, POOLED_DIM = 512, 4096, 768

MODES = {
    "lossless": dict(),  # defaults: fused QKV, cuDNN attention, regional compile on CUDA
    "fp8": dict(fp8=True),
    "first_block_cache": dict(first_block_cache=0.08),
    "fp8+first_block_cache": dict(fp8=True, first_block_cache=0.08),
    "offload_model": dict(offload="model"),
    "offload_group": dict(offload="group"),
}
PROMPT = "Change the vase to red."


def build_real_pipeline(device: str, dtype: torch.dtype) -> FluxKontextPipeline:
    """Random weights at the real shape, created directly on the device in ``dtype``."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = FluxTransformer2DModel(**TRANSFORMER)
            vae = AutoencoderKL(**VAE)
    finally:
        torch.set_default_dtype(previous)
    return FluxKontextPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=vae, text_encoder=None,
                               tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=transformer)


def build_tiny_pipeline(device: str, dtype: torch.dtype) -> FluxKontextPipeline:
    from tests.tiny_kontext import build_pipeline

    return build_pipeline().to(device=device, dtype=dtype)


def prompt_embeddings(pipe, device: str, dtype: torch.dtype, batch: int):
    """The same embeddings every run: shaped like T5 and CLIP's, or the tiny encoders' real output."""
    generator = torch.Generator("cpu").manual_seed(1)
    if pipe.text_encoder_2 is not None:
        embeds, pooled, _ = pipe.encode_prompt(prompt=[PROMPT], prompt_2=None, device=device, max_sequence_length=32)
    else:
        embeds = torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=generator)
        pooled = torch.randn(1, POOLED_DIM, generator=generator)
    return embeds.to(device, dtype), pooled.to(device, dtype)


def input_image(size: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))


def timed(call: Callable[[], list], repeats: int, sync: Callable[[], None]) -> tuple[list, float, float]:
    """(images of the last call, seconds of the first call, mean seconds of the repeated calls)."""
    sync()
    start = time.perf_counter()
    images = call()
    sync()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        images = call()
    sync()
    return images, first, (time.perf_counter() - start) / max(1, repeats)


def run_baseline(pipe, args, embeds, pooled, image, sync):
    """Plain diffusers, as DataFlow-MM calls it (attention slicing is a no-op for Flux).

    With --tiny the reference is not snapped to the 1-megapixel preferred Kontext sizes (``_auto_resize=False``):
    the input is already at the output size, as the serving's scaled reference size is.
    """
    pipe.set_progress_bar_config(disable=True)
    keys = [f"row-{i}" for i in range(args.batch_size)]
    extra = {"max_area": args.resolution**2}  # at 1024 the default; other sizes would be rescaled to 1024² without it
    if args.tiny:
        extra["_auto_resize"] = False

    def call():
        generators = [torch.Generator("cpu").manual_seed(image_seed(args.seed, key, 0)) for key in keys]
        with torch.inference_mode():
            return pipe(image=[image] * args.batch_size, prompt_embeds=embeds.repeat(args.batch_size, 1, 1),
                        pooled_prompt_embeds=pooled.repeat(args.batch_size, 1), height=args.resolution,
                        width=args.resolution, num_inference_steps=args.steps, guidance_scale=3.5,
                        generator=generators, max_sequence_length=embeds.shape[1], **extra).images

    return timed(call, args.repeats, sync)


def run_serving(pipe, args, embeds, pooled, image, sync, options: dict, device: str):
    serving = FluxKontextServing("in-memory", batch_size=args.batch_size, num_inference_steps=args.steps,
                                 height=args.resolution, width=args.resolution, seed=args.seed,
                                 max_sequence_length=embeds.shape[1], acceleration=Acceleration(**options))
    serving.use_pipeline(pipe, device)
    serving.prime_prompt(PROMPT, embeds, pooled)
    requests = [EditRequest(f"row-{i}", image, PROMPT) for i in range(args.batch_size)]
    return timed(lambda: [r.images[0] for r in serving.edit(requests)], args.repeats, sync)


def max_abs_diff(images, reference) -> float:
    return float(max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max() / 255
                     for a, b in zip(images, reference)))


def main(argv: Optional[list] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU: for CI and parity")
    parser.add_argument("--modes", default=None, help=f"comma-separated subset of {', '.join(MODES)}")
    parser.add_argument("--steps", type=int, default=None, help="default 28 (2 with --tiny)")
    parser.add_argument("--resolution", type=int, default=None, help="default 1024 (64 with --tiny)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="timed calls after the warm-up call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="with --tiny: also compile on CPU (slow to start)")
    parser.add_argument("--out", default=None, help="also write the JSON (and the command) to this file")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        parser.error("the real-shape benchmark needs a CUDA GPU (12 B parameters); use --tiny on CPU")
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    args.steps = args.steps or (2 if args.tiny else 28)
    args.resolution = args.resolution or (64 if args.tiny else 1024)
    build = build_tiny_pipeline if args.tiny else build_real_pipeline
    modes = args.modes.split(",") if args.modes else list(MODES)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    image = input_image(args.resolution)

    def fresh():
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        return build(device, dtype)

    def peak() -> Optional[float]:
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None

    pipe = fresh()
    embeds, pooled = prompt_embeddings(pipe, device, dtype, args.batch_size)
    baseline_images, _, baseline_s = run_baseline(pipe, args, embeds, pooled, image, sync)
    baseline_peak = peak()
    del pipe
    result = {
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__, "diffusers": diffusers.__version__, "steps": args.steps,
        "resolution": f"{args.resolution}x{args.resolution}", "batch_size": args.batch_size,
        "model": "tiny random FLUX.1 Kontext" if args.tiny else "FLUX.1-Kontext-dev shape, random weights",
        "text_encoders": "skipped: the same prompt embeddings are passed to every run",
        "baseline_s_per_image": round(baseline_s / args.batch_size, 4), "baseline_peak_mem_gib": baseline_peak,
        "modes": {},
    }
    for name in modes:
        options = dict(MODES[name])
        if options.get("offload") and not cuda:
            result["modes"][name] = {"skipped": "offloading needs a CUDA device"}
            continue
        if args.tiny and args.compile:
            options["compile"] = True
        pipe = fresh()
        try:
            images, first, seconds = run_serving(pipe, args, embeds, pooled, image, sync, options, device)
        except Exception as exc:  # one mode failing (say, fp8 on a GPU without it) must not hide the others
            result["modes"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        finally:
            del pipe
        result["modes"][name] = {
            "s_per_image": round(seconds / args.batch_size, 4),
            "speedup": round(baseline_s / seconds, 3),
            "first_call_s": round(first, 2),
            "peak_mem_gib": peak(),
            "max_abs_diff_vs_baseline": round(max_abs_diff(images, baseline_images), 4),
        }
    line = json.dumps(result)
    print(line)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({"command": " ".join(["python", *sys.argv]), **result}, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
