"""Throughput of every diffusers editing family: plain diffusers against this project's serving, in one process.

    python benchmarks/bench_families.py                                 # GPU: Qwen-Image-Edit-2509, FLUX.2 [klein] 4B, 9B
    python benchmarks/bench_families.py --families flux2-dev            # GPU: FLUX.2 [dev] (32 B), in its own process
    python benchmarks/bench_families.py --tiny                          # CPU: tiny models, parity of the lossless mode

Each family is built at its model's real shape with random weights (a step costs the same whatever the weights
are), so nothing is downloaded; the text encoders (Qwen2.5-VL, Qwen3, Mistral 3) are skipped, every run gets the same
prompt embeddings, as ``bench_kontext.py`` skips T5. For each family, plain diffusers runs first, called as a user
calls the pipeline, then ``DiffusersEditServing`` in each mode, each on a freshly built pipeline with the same
weights, input image and noise. FLUX.1 Kontext has its own benchmark, ``bench_kontext.py``.

Two schedules per family:

- the model card's (Qwen-Image-Edit-2509: 40 steps with true CFG, two transformer calls a step; FLUX.2 [klein]
  4B / 9B: 4 steps, step-distilled; FLUX.2 [dev]: 50 steps, embedded guidance). Past ``--direct-steps`` steps it is
  not run whole: a step costs the same whatever the count, so the card's time per image is the time of a call of
  ``--short-steps`` steps plus the card's remaining steps at the per-step time measured between two short calls
  (``card_method`` in the JSON says which);
- the step-distilled schedule of a Lightning/Turbo LoRA (8 steps, CFG off; FLUX.2 [klein] is distilled already:
  4 steps), measured whole. A LoRA fused into the weights costs nothing per step, so random weights measure it.

For each mode: seconds per image at both schedules and the speedup over plain diffusers in the same process, peak
GPU memory, the warm-up call (compilation), one transformer step on the baseline's step-one inputs and its relative
L2 from the baseline's output, and the largest pixel difference at the distilled schedule. The JSON (``--out``) is
rewritten after every mode, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import diffusers  # noqa: E402
from bench_kontext import (  # noqa: E402
    StepInputs,
    failure,
    input_image,
    max_abs_diff,
    relative_l2,
    step_seconds,
    synchronizer,
    write,
)

from dataflow.core.request import EditRequest  # noqa: E402
from dataflow.core.seeding import image_seed  # noqa: E402
from dataflow.serving.diffusers.serving import DiffusersEditServing  # noqa: E402
from dataflow.serving.diffusers.speed.options import Acceleration  # noqa: E402

PROMPT = "Change the vase to red."
KEY = "row-0"

# The modes: Acceleration options for DiffusersEditServing. "lossless" is the defaults (on CUDA: cuDNN attention,
# regional compilation, fused QKV where the family has it; Qwen's one-prompt calls without their text mask).
MODES = {
    "lossless": dict(),
    "lossless_eager": dict(compile=False),  # the defaults without compilation: what the rest is worth alone
    "fp8": dict(fp8=True),
    "fp8+fp8_attention": dict(fp8=True, fp8_attention=True),  # the Triton kernel
    "fp8+fp8_attention_cudnn": dict(fp8=True, fp8_attention="cudnn"),
    "fp8_attention_cudnn": dict(fp8_attention="cudnn"),
}
DEFAULT_MODES = ("lossless", "fp8", "fp8+fp8_attention_cudnn")


@dataclass
class FamilySpec:
    """One model at its real shape: how to build it, what the encoder would have produced, how it is called."""

    title: str
    family: str  # DiffusersEditServing's family name
    build: Callable[[str, torch.dtype], Any]  # random weights at the real shape
    build_tiny: Callable[[], Any]
    text_tokens: int  # what the skipped encoder would produce for one instruction
    text_dim: int
    card_steps: int
    card_guidance: dict  # the serving's parameters at the card's schedule
    distilled_steps: int
    distilled_guidance: dict = field(default_factory=dict)
    notes: str = ""


def on_device(device: str, dtype: torch.dtype, make: Callable[[], Any]) -> Any:
    """Build modules directly on ``device`` in ``dtype`` (random initialisation there: seconds, not minutes)."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return make()
    finally:
        torch.set_default_dtype(previous)


QWEN_SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                      base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02,
                      time_shift_type="exponential")


def build_qwen_edit_plus(device: str, dtype: torch.dtype):
    """Qwen-Image-Edit-2509: the 20.4 B transformer and the VAE at their published configs (diffusers' defaults)."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPlusPipeline,
        QwenImageTransformer2DModel,
    )

    transformer, vae = on_device(device, dtype, lambda: (QwenImageTransformer2DModel(), AutoencoderKLQwenImage()))
    return QwenImageEditPlusPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_SCHEDULER), vae=vae,
                                     text_encoder=None, tokenizer=None, processor=None, transformer=transformer)


FLUX2_SHAPES = {  # Flux2Transformer2DModel configs (diffusers' defaults are [dev]'s)
    "klein-4b": dict(num_layers=5, num_single_layers=20, num_attention_heads=24, joint_attention_dim=7680,
                     guidance_embeds=False),
    "klein-9b": dict(num_layers=8, num_single_layers=24, num_attention_heads=32, joint_attention_dim=12288,
                     guidance_embeds=False),
    "dev": dict(),
}


def flux2_builder(shape: str) -> Callable[[str, torch.dtype], Any]:
    def build(device: str, dtype: torch.dtype):
        from diffusers import (
            AutoencoderKLFlux2,
            FlowMatchEulerDiscreteScheduler,
            Flux2KleinPipeline,
            Flux2Pipeline,
            Flux2Transformer2DModel,
        )

        transformer, vae = on_device(device, dtype, lambda: (Flux2Transformer2DModel(**FLUX2_SHAPES[shape]),
                                                             AutoencoderKLFlux2()))
        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift=3.0)
        if shape == "dev":
            return Flux2Pipeline(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,
                                 transformer=transformer)
        return Flux2KleinPipeline(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,
                                  transformer=transformer, is_distilled=True)

    return build


def tiny_qwen():
    from tests.tiny_qwen_edit import build_pipeline

    return build_pipeline(plus=True)


def tiny_flux2():
    from tests.tiny_flux2 import build_pipeline

    return build_pipeline(distilled=True)


FAMILIES = {
    "qwen-edit-2509": FamilySpec(
        "Qwen-Image-Edit-2509 (20.4 B)", "Qwen-Image-Edit", build_qwen_edit_plus, tiny_qwen, text_tokens=300,
        text_dim=3584, card_steps=40, card_guidance=dict(true_cfg_scale=4.0), distilled_steps=8,
        distilled_guidance=dict(true_cfg_scale=1.0),
        notes="card: 40 steps, true CFG 4.0 (two transformer calls a step); distilled: a Lightning LoRA's 8 steps, "
              "CFG off; the Qwen2.5-VL encoder skipped (about 300 tokens for an instruction and one 384x384 view)"),
    "flux2-klein-4b": FamilySpec(
        "FLUX.2 [klein] 4B", "FLUX.2", flux2_builder("klein-4b"), tiny_flux2, text_tokens=512, text_dim=7680,
        card_steps=4, card_guidance=dict(guidance_scale=1.0), distilled_steps=4,
        notes="step-distilled: the card's 4 steps without CFG are the distilled schedule; the Qwen3-4B encoder "
              "skipped (512 tokens, 3 layers of 2560)"),
    "flux2-klein-9b": FamilySpec(
        "FLUX.2 [klein] 9B", "FLUX.2", flux2_builder("klein-9b"), tiny_flux2, text_tokens=512, text_dim=12288,
        card_steps=4, card_guidance=dict(guidance_scale=1.0), distilled_steps=4,
        notes="as the 4B; the Qwen3-8B encoder skipped (512 tokens, 3 layers of 4096)"),
    "flux2-dev": FamilySpec(
        "FLUX.2 [dev] (32 B)", "FLUX.2", flux2_builder("dev"), tiny_flux2, text_tokens=512, text_dim=15360,
        card_steps=50, card_guidance=dict(guidance_scale=4.0), distilled_steps=8,
        distilled_guidance=dict(guidance_scale=4.0),
        notes="card: 50 steps, embedded guidance (one transformer call a step); distilled: a Turbo LoRA's 8 steps; "
              "the Mistral 3 encoder skipped (512 tokens, 3 layers of 5120). Needs an 80 GB+ GPU; run alone"),
}
DEFAULT_FAMILIES = ("qwen-edit-2509", "flux2-klein-4b", "flux2-klein-9b")


class FamilyBench:
    """One family on one device: the baseline first, then each mode on a freshly built pipeline."""

    def __init__(self, spec: FamilySpec, args, device: str, dtype: torch.dtype):
        self.spec, self.args, self.device, self.dtype = spec, args, device, dtype
        self.cuda = device.startswith("cuda")
        self.sync = synchronizer(self.cuda)
        self.image = input_image(args.resolution)
        self.qwen = spec.family == "Qwen-Image-Edit"
        self.embeds = self.negative = None
        self.step_inputs: Optional[dict] = None
        self.baseline_step_output = None
        self.baseline_images: list = []
        self.baseline_s: dict = {}

    def fresh(self):
        gc.collect()
        if self.cuda:
            torch._dynamo.reset()
            torch.cuda.empty_cache()
        if self.args.tiny:
            return self.spec.build_tiny().to(self.device, self.dtype)
        return self.spec.build(self.device, self.dtype)

    def prepare_embeddings(self, pipe) -> None:
        """The same prompt embeddings for every run: the tiny encoders' output, or random at the real shape."""
        if self.args.tiny:
            kwargs = dict(image=[self.image.resize((64, 64))]) if self.qwen else dict(max_sequence_length=32)
            self.embeds = self._encode(pipe, PROMPT, kwargs)
            self.negative = self._encode(pipe, " ", kwargs) if self.qwen else None
            return
        generator = torch.Generator("cpu").manual_seed(1)
        shape = (1, self.spec.text_tokens, self.spec.text_dim)
        embeds, negative = (torch.randn(shape, generator=generator).to(self.device, self.dtype) for _ in range(2))
        ones = torch.ones(shape[:2], dtype=torch.long, device=self.device)
        self.embeds, self.negative = ((embeds, ones), (negative, ones)) if self.qwen else (embeds, None)

    def _encode(self, pipe, prompt: str, kwargs: dict):
        with torch.inference_mode():
            embeds, mask = pipe.encode_prompt(prompt=[prompt], device=self.device, num_images_per_prompt=1, **kwargs)
        if not self.qwen:
            return embeds
        return embeds, torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device) if mask is None else mask

    # -- the two callers -----------------------------------------------------------------------------------
    def baseline_call(self, pipe) -> Callable[[int, dict], list]:
        """Plain diffusers, as a user calls the pipeline with precomputed embeddings."""
        pipe.set_progress_bar_config(disable=True)
        side = self.args.resolution

        def call(steps: int, guidance: dict) -> list:
            with self.reference_sizing():
                return plain(steps, guidance)

        def plain(steps: int, guidance: dict) -> list:
            generator = torch.Generator("cpu").manual_seed(image_seed(self.args.seed, KEY, 0))
            options = dict(image=[self.image], height=side, width=side, num_inference_steps=steps,
                           generator=[generator])
            if self.qwen:
                cfg = guidance["true_cfg_scale"] > 1
                options.update(prompt_embeds=self.embeds[0], prompt_embeds_mask=self.embeds[1],
                               negative_prompt_embeds=self.negative[0] if cfg else None,
                               negative_prompt_embeds_mask=self.negative[1] if cfg else None,
                               true_cfg_scale=guidance["true_cfg_scale"], max_sequence_length=self.embeds[0].shape[1])
            else:
                options.update(prompt_embeds=self.embeds, guidance_scale=guidance["guidance_scale"],
                               max_sequence_length=self.embeds.shape[1])
            with torch.inference_mode():
                return pipe(**options).images

        return call

    def reference_sizing(self):
        """Qwen's pipeline sizes its VAE reference at 1024x1024 whatever the output; the serving at the output's
        area. Equal at the real benchmark's 1024x1024; at another size (--tiny) the baseline gets the serving's
        sizing, so that both do the same work."""
        import contextlib

        side = self.args.resolution
        if not self.qwen or side * side == 1024 * 1024:
            return contextlib.nullcontext()
        from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as module

        from dataflow.serving.diffusers.qwen_image_edit import _reference_area

        return _reference_area(module, True, side * side)

    def serving_call(self, pipe, options: dict) -> Callable[[int, dict], list]:
        side = self.args.resolution
        sequence = (self.embeds[0] if self.qwen else self.embeds).shape[1]
        serving = DiffusersEditServing("in-memory", family=self.spec.family, batch_size=1, height=side, width=side,
                                       seed=self.args.seed, max_sequence_length=sequence,
                                       acceleration=Acceleration(**options))
        serving.use_pipeline(pipe, self.device)
        # The encoder is skipped: the family's encode step returns the fixed embeddings.
        serving.family.encode = lambda pipe, prompt, references, params: (
            self.negative if prompt != PROMPT else self.embeds)
        request = EditRequest(KEY, self.image, PROMPT)

        def call(steps: int, guidance: dict) -> list:
            serving.num_inference_steps = steps
            for name, value in guidance.items():
                setattr(serving, name, value)
            (result,) = serving.edit([request])
            if not result.ok:
                raise RuntimeError(result.error)
            return result.images

        call.serving = serving
        return call

    # -- timing ---------------------------------------------------------------------------------------------
    def seconds(self, call, steps: int, guidance: dict) -> tuple[list, float]:
        self.sync()
        start = time.perf_counter()
        images = call(steps, guidance)
        self.sync()
        return images, time.perf_counter() - start

    def measure(self, call) -> dict:
        """The warm-up call, both schedules, and the images of the distilled one."""
        spec, args = self.spec, self.args
        card = dict(spec.card_guidance)
        _, first = self.seconds(call, args.warmup_steps, card)
        result: dict = {"first_call_s": round(first, 2)}
        distilled = dict(spec.card_guidance, **spec.distilled_guidance)
        same = spec.card_steps == spec.distilled_steps and distilled == card  # FLUX.2 [klein]: distilled already
        if same:
            pass
        elif spec.card_steps <= args.direct_steps:
            times = [self.seconds(call, spec.card_steps, card)[1] for _ in range(args.repeats)]
            result.update(s_per_image_card=round(sum(times) / len(times), 4), card_method="measured")
        else:
            short, longer = args.short_steps, 2 * args.short_steps
            _, t_short = self.seconds(call, short, card)
            _, t_long = self.seconds(call, longer, card)
            per_step = (t_long - t_short) / (longer - short)
            result.update(s_per_image_card=round(t_short + (spec.card_steps - short) * per_step, 4),
                          card_s_per_step=round(per_step, 4),
                          card_method=f"extrapolated: {short} steps {t_short:.3f} s, {longer} steps {t_long:.3f} s")
        times, images = [], []
        for _ in range(args.repeats):
            images, seconds = self.seconds(call, spec.distilled_steps, distilled)
            times.append(seconds)
        result["s_per_image_distilled"] = round(sum(times) / len(times), 4)
        if same:
            result.update(s_per_image_card=result["s_per_image_distilled"], card_method="measured (= distilled)")
        result["images"] = images
        return result

    def step_metrics(self, transformer) -> dict:
        if self.step_inputs is None:
            return {}
        try:
            seconds, out = step_seconds(transformer, self.step_inputs, self.sync)
        except Exception as exc:  # a step-level figure failing must not lose the mode's per-image figures
            return {"step_error": failure(exc)}
        metrics = {"step_s": round(seconds, 4)}
        if self.baseline_step_output is None:
            self.baseline_step_output = out.clone()
        else:
            metrics["step_rel_l2_vs_baseline"] = round(relative_l2(out, self.baseline_step_output), 5)
        return metrics

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> Optional[float]:
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.cuda else None

    # -- runs -----------------------------------------------------------------------------------------------
    def baseline(self) -> dict:
        pipe = self.fresh()
        self.prepare_embeddings(pipe)
        params = round(sum(p.numel() for p in pipe.transformer.parameters()) / 1e9, 2)
        capture = StepInputs(pipe.transformer)
        self.reset_peak()
        measured = self.measure(self.baseline_call(pipe))
        self.baseline_images = measured.pop("images")
        self.baseline_s = {k: measured[k] for k in ("s_per_image_card", "s_per_image_distilled")}
        measured["peak_mem_gib"] = self.peak()
        self.step_inputs = capture.kwargs
        measured.update(self.step_metrics(pipe.transformer))
        return dict(measured, transformer_params_b=params)

    def mode(self, name: str) -> dict:
        options = dict(MODES[name])
        kernel = Acceleration(**options).fp8_attention_kernel
        if kernel:
            from dataflow.serving.diffusers.speed.fp8_attention import unavailable_reason

            reason = unavailable_reason(self.device, kernel)
            if reason:
                return {"options": options, "skipped": f"fp8_attention ({kernel}): {reason}"}
        if self.args.tiny and self.args.compile:
            options["compile"] = True
        pipe = call = None
        try:
            pipe = self.fresh()
            call = self.serving_call(pipe, options)
            self.reset_peak()
            measured = self.measure(call)
            images = measured.pop("images")
            result = {"options": options, **measured, "peak_mem_gib": self.peak(),
                      "speedup_card": round(self.baseline_s["s_per_image_card"] / measured["s_per_image_card"], 3),
                      "speedup_distilled": round(self.baseline_s["s_per_image_distilled"]
                                                 / measured["s_per_image_distilled"], 3),
                      "max_abs_diff_vs_baseline": round(max_abs_diff(images, self.baseline_images), 4)}
            result.update(self.step_metrics(call.serving.pipe.transformer))
            return result
        except Exception as exc:  # one mode failing must not hide the others
            return {"options": options, "error": failure(exc, 2000)}
        finally:
            pipe = call = None


def main(argv: Optional[list] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU: for CI and parity")
    parser.add_argument("--families", default=None,
                        help=f"comma-separated subset of {', '.join(FAMILIES)} (default {','.join(DEFAULT_FAMILIES)})")
    parser.add_argument("--modes", default=None,
                        help=f"comma-separated subset of {', '.join(MODES)} (default {','.join(DEFAULT_MODES)})")
    parser.add_argument("--resolution", type=int, default=None, help="output and input side (default 1024; 64 tiny)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="steps of the warm-up call (compilation)")
    parser.add_argument("--direct-steps", type=int, default=8,
                        help="card schedules up to this many steps are timed whole; longer ones are extrapolated")
    parser.add_argument("--short-steps", type=int, default=None,
                        help="the short call of the extrapolation (its double is the long one; default 4, tiny 2; at "
                             "least 2: Qwen's scheduler stretches a 1-step schedule into a NaN timestep)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per schedule")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="with --tiny: also compile on the CPU (slow)")
    parser.add_argument("--out", default=None, help="also write the JSON (and the command) here, after every mode")
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        parser.error("the real-shape benchmark needs a CUDA GPU (4-32 B parameters); use --tiny on the CPU")
    families = args.families.split(",") if args.families else list(DEFAULT_FAMILIES)
    modes = args.modes.split(",") if args.modes else list(DEFAULT_MODES)
    for kind, names, known in (("family", families, FAMILIES), ("mode", modes, MODES)):
        unknown = [n for n in names if n not in known]
        if unknown:
            parser.error(f"unknown {kind}(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    args.resolution = args.resolution or (64 if args.tiny else 1024)
    args.short_steps = args.short_steps or (2 if args.tiny else 4)
    if args.short_steps < 2 or args.warmup_steps < 2:
        parser.error("--short-steps and --warmup-steps must be 2 or more: Qwen-Image's scheduler (shift_terminal) "
                     "turns a 1-step schedule into a NaN timestep")
    cuda = torch.cuda.is_available() and not args.tiny
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    result: dict = {
        "benchmark": "bench_families",
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__, "diffusers": diffusers.__version__,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "resolution": f"{args.resolution}x{args.resolution}", "batch_size": 1, "warmup_steps": args.warmup_steps,
        "weights": "tiny random models" if args.tiny else "random, at each model's real shape",
        "text_encoders": "skipped: the same prompt embeddings are passed to every run",
        "families": {},
    }
    for key in families:
        spec = FAMILIES[key]
        bench = FamilyBench(spec, args, device, dtype)
        entry: dict = {"title": spec.title, "card_steps": spec.card_steps, "card_guidance": spec.card_guidance,
                       "distilled_steps": spec.distilled_steps,
                       "distilled_guidance": dict(spec.card_guidance, **spec.distilled_guidance),
                       "notes": spec.notes, "modes": {}}
        result["families"][key] = entry
        started = time.perf_counter()
        try:
            entry["baseline"] = bench.baseline()
        except Exception as exc:  # a family that cannot run (memory, say) must not cost the others
            entry["baseline"] = {"error": failure(exc, 2000)}
            write(result, args.out)
            continue
        entry["baseline"]["wall_s"] = round(time.perf_counter() - started, 1)
        write(result, args.out)
        for name in modes:
            started, clock = time.perf_counter(), time.time()
            entry["modes"][name] = bench.mode(name)
            entry["modes"][name].update(mode_wall_s=round(time.perf_counter() - started, 1),
                                        started_unix=round(clock, 1))
            print(key, name, {k: v for k, v in entry["modes"][name].items() if k != "options"}, file=sys.stderr)
            write(result, args.out)
        bench = None
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(main()))
