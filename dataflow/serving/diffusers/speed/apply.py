"""Applying the speed options to a pipeline: placement, layer rewrites, wrappers and compilation, in that order."""

from __future__ import annotations

import contextlib
from typing import Any, Optional

from dataflow.core.errors import InputError
from dataflow.logger import get_logger
from dataflow.serving.diffusers.speed.options import (
    FP8_ATTENTION_FAMILIES,
    STEP_CACHE_FAMILIES,
    Acceleration,
)

logger = get_logger()


def prepare_pipeline(pipe: Any, device: str, options: Acceleration, family: Any = None) -> tuple[Any, list[str]]:
    """Place ``pipe`` on ``device`` and apply ``options``; return it and the names of what was applied.

    ``family`` (a ``dataflow.serving.diffusers.family.Family``) says which layer rewrites apply; None: FLUX.1 Kontext.

    The layer changes (fused QKV, FP8) come first when offloading: group offload records every parameter when it is
    set up, so a layer created afterwards has no CPU copy to load from, and quantizing on the CPU means the bf16
    weights never have to fit on the GPU at once. Without offloading they come after the move, where they are fast.
    Options that cannot run on ``device`` or ``family`` are refused first, before anything moves.
    """
    check_applicable(options, device, family)
    if options.offload:
        applied = restructure(pipe, device, options, family)
        pipe = place_pipeline(pipe, device, options)
    else:
        pipe = place_pipeline(pipe, device, options)
        applied = restructure(pipe, device, options, family)
    return pipe, applied + accelerate(pipe, device, options, family)


def check_applicable(options: Acceleration, device: str, family: Any = None) -> None:
    """Refuse the lossy options that cannot run here (InputError): FP8 attention on a family it does not take or
    off an FP8-capable NVIDIA GPU, the step cache on a family it is not wired for."""
    name = getattr(family, "name", "FLUX-Kontext")
    shown = getattr(family, "display_name", name)
    if options.fp8_attention and name not in FP8_ATTENTION_FAMILIES:
        raise InputError(f"fp8_attention is wired and tested for {', '.join(FP8_ATTENTION_FAMILIES)}, not {shown}; "
                         "run without --fp8-attention")
    if options.cache and name not in STEP_CACHE_FAMILIES:
        raise InputError(f"cache is wired and tested for {', '.join(STEP_CACHE_FAMILIES)} only, not {shown}; run "
                         "without --cache")
    if options.fp8_attention:
        from dataflow.serving.diffusers.speed.fp8_attention import unavailable_reason

        kernel = options.fp8_attention_kernel
        reason = unavailable_reason(device, kernel)
        if reason:
            raise InputError(f"fp8_attention ({kernel} kernel) cannot run here: {reason}; run without "
                             "--fp8-attention")


def place_pipeline(pipe: Any, device: str, options: Acceleration) -> Any:
    """Move the pipeline to ``device``, or set up offloading so that only the active part lives there."""
    if options.offload is None or not device.startswith("cuda"):
        if options.offload is not None:
            logger.warning("offload=%s needs a CUDA device; running on %s without it", options.offload, device)
        return pipe.to(device)
    import torch

    if options.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                  offload_type="block_level", num_blocks_per_group=1, use_stream=True)
    return pipe


def restructure(pipe: Any, device: str, options: Acceleration, family: Any = None) -> list[str]:
    """The options that replace layers of ``pipe.transformer``: fused QKV projections, the split output projection
    of the single-stream blocks, FP8 linears (after the split, so that both halves are converted), GELU fused into
    the linear before it (after FP8, so only layers left in bf16 are fused)."""
    rewrites = options.rewrites(device.startswith("cuda"))
    supported = {"fuse_qkv": getattr(family, "fuse_qkv", True), "split_proj_out": getattr(family, "flux_rewrites", True),
                 "fuse_gelu": getattr(family, "flux_rewrites", True)}
    for name, wanted in rewrites.items():
        if wanted and not supported[name]:
            rewrites[name] = False
            if getattr(options, name) is True:  # asked for explicitly, not a default
                logger.warning("%s does not apply to %s; skipped", name, getattr(family, "display_name", "this model"))
    block_lists = getattr(family, "fp8_blocks", ("transformer_blocks", "single_transformer_blocks"))
    transformer = pipe.transformer
    applied = []
    if rewrites["fuse_qkv"]:
        transformer.fuse_qkv_projections()
        drop_unfused_projections(transformer)
        applied.append("fuse_qkv")
    if rewrites["split_proj_out"]:
        from dataflow.serving.diffusers.speed.single_block import (
            split_single_block_projections,
        )

        applied.append(f"split_proj_out={split_single_block_projections(transformer)}")
    if options.fp8_scaling:
        from dataflow.serving.diffusers.speed.fp8 import (
            convert_linears_to_fp8,
            is_modulation,
        )

        blocks = [block for name in block_lists for block in getattr(transformer, name, ())]
        converted = sum(convert_linears_to_fp8(block, options.fp8_scaling, skip=is_modulation) for block in blocks)
        applied.append(f"fp8_linears={converted} ({options.fp8_scaling})")
    if rewrites["fuse_gelu"]:
        from dataflow.serving.diffusers.speed.fused_gelu import fuse_gelu_linears

        applied.append(f"fused_gelu_linears={fuse_gelu_linears(transformer)}")
    return applied


def drop_unfused_projections(transformer: Any) -> int:
    """Delete the separate query/key/value layers that ``fuse_qkv_projections()`` keeps beside the fused ones.

    diffusers keeps them so that fusing can be undone; a fused attention layer never calls them, and they hold a
    sixth of FLUX.1 Kontext's parameters (docs/performance.md). Returns how many layers were deleted.
    """
    dropped = 0
    for module in transformer.modules():
        if not getattr(module, "fused_projections", False):
            continue
        names = ["to_q", "to_k", "to_v"] if hasattr(module, "to_qkv") else []
        if hasattr(module, "to_added_qkv"):
            names += ["add_q_proj", "add_k_proj", "add_v_proj"]
        for name in names:
            if getattr(module, name, None) is not None:
                delattr(module, name)
                dropped += 1
    return dropped


def accelerate(pipe: Any, device: str, options: Acceleration, family: Any = None) -> list[str]:
    """The options that wrap the pipeline's models as they are: attention backend, first-block cache, step cache, FP8
    attention, compilation of the transformer and of the VAE.

    FP8 attention wraps the transformer's forward after the step cache, which replaces that forward with its own
    (cache-dit's FLUX adapter); compilation comes last, so that it traces both.
    """
    cuda = device.startswith("cuda")
    transformer = pipe.transformer
    applied = []
    backend = options.attention_backend or ("_native_cudnn" if cuda else None)
    if backend:
        transformer.set_attention_backend(backend)
        applied.append(f"attention={backend}")
    if options.first_block_cache is not None:
        from diffusers.hooks import FirstBlockCacheConfig

        if not getattr(family, "first_block_cache", True):
            raise InputError(f"first_block_cache does not work with {family.display_name} in this diffusers "
                             "version (its hook fails on the model's blocks); run without it")

        transformer.enable_cache(FirstBlockCacheConfig(threshold=options.first_block_cache))
        applied.append(f"first_block_cache={options.first_block_cache}")
    if options.cache:
        from dataflow.serving.diffusers.speed.step_cache import enable_step_cache

        applied.append(enable_step_cache(transformer, options.cache))
    if options.fp8_attention:
        from dataflow.serving.diffusers.speed.fp8_attention import use_fp8_attention

        use_fp8_attention(transformer, options.fp8_attention_kernel)
        applied.append(f"fp8_attention ({options.fp8_attention_kernel})")
    plan = options.compile_plan(cuda)
    if plan is not None:
        scope = plan.pop("scope")
        if scope == "blocks":
            transformer.compile_repeated_blocks(**plan)
        else:
            from dataflow.serving.diffusers.speed.graphed_forward import GraphedForward

            transformer.forward = GraphedForward(transformer.forward, plan)
        applied.append(("compile_repeated_blocks" if scope == "blocks" else "compile (whole transformer)")
                       + ("" if plan["fullgraph"] else " (graph breaks allowed)")
                       + (" + CUDA graphs" if plan.get("mode") == "reduce-overhead" and cuda else "")
                       + (" + kernel tuning" if "options" in plan else ""))
    if options.compile_vae:
        pipe.vae.encoder.compile(fullgraph=True)
        pipe.vae.decoder.compile(fullgraph=True)
        applied.append("compile_vae")
    return applied


@contextlib.contextmanager
def denoiser_context(pipe: Any, options: Acceleration, family: Any = None, steps: Optional[int] = None):
    """The context a pipeline call of ``steps`` steps runs in.

    With the step cache, a fresh cache-dit context laid out for ``steps`` (cache-dit would otherwise count steps
    across calls). With the first-block cache, diffusers' cache context on the families that need one
    (``family.needs_cache_context``): ``FluxKontextPipeline`` (diffusers 0.42) does not open one around its
    transformer calls as ``FluxPipeline`` does, and the cache refuses to run without one. Kontext makes only
    conditional calls, so one context around the whole call is equivalent; the pipeline resets the cache's state at
    the end of each call.
    """
    if options.cache:
        from dataflow.serving.diffusers.speed.step_cache import refresh_step_cache

        refresh_step_cache(pipe.transformer, options.cache, steps)
    if options.first_block_cache is None or not getattr(family, "needs_cache_context", True):
        yield
        return
    with pipe.transformer.cache_context("cond"):
        yield
