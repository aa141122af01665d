"""Speed and memory options for the FLUX.1 Kontext pipeline.

Lossless (on by default on CUDA, where they help): fused QKV projections, the cuDNN attention backend, and
regional compilation of the repeated transformer blocks. Lossy (opt-in): FP8 linear layers in the transformer
blocks, and diffusers' first-block cache. Memory (opt-in, for smaller GPUs): model CPU offload, group offload.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Optional

from dataflow.core.errors import InputError
from dataflow.logger import get_logger

logger = get_logger()

OFFLOAD_MODES = ("model", "group")


@dataclass(frozen=True)
class Acceleration:
    """Which speedups to apply.

    Args:
        fuse_qkv: fuse the query/key/value projections into one GEMM (None: on CUDA).
        compile: ``compile_repeated_blocks(fullgraph=True)``: compiles one block and reuses it, ~17 s instead of
            ~84 s for the whole model (None: on CUDA).
        attention_backend: a diffusers attention backend, e.g. "_native_cudnn" (None: cuDNN on CUDA, else the
            default SDPA).
        fp8: FP8 linear layers in the transformer blocks (lossy; NVIDIA GPUs with FP8 support).
        first_block_cache: diffusers' first-block cache threshold, e.g. 0.08 (lossy; None: off). Steps whose
            first-block residual changes less than this skip the remaining blocks.
        offload: "model" (``enable_model_cpu_offload``) or "group" (block-level group offload with a CUDA stream)
            to fit smaller GPUs, at a cost in speed (None: the whole pipeline on the device).
    """

    fuse_qkv: Optional[bool] = None
    compile: Optional[bool] = None
    attention_backend: Optional[str] = None
    fp8: bool = False
    first_block_cache: Optional[float] = None
    offload: Optional[str] = None

    def __post_init__(self) -> None:
        if self.offload not in (None, *OFFLOAD_MODES):
            raise InputError(f"offload must be one of {', '.join(OFFLOAD_MODES)} or None, got {self.offload!r}")
        if self.first_block_cache is not None and not 0 < self.first_block_cache < 1:
            raise InputError(f"first_block_cache is a threshold in (0, 1), got {self.first_block_cache!r}")

    def lossy(self) -> dict:
        """The options that change output pixels beyond float rounding; they belong in a run's fingerprint."""
        return {"fp8": self.fp8, "first_block_cache": self.first_block_cache}


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


def accelerate(pipe: Any, device: str, options: Acceleration) -> list[str]:
    """Apply ``options`` to ``pipe.transformer``; return the names of what was applied, for logs and benchmarks."""
    cuda = device.startswith("cuda")
    transformer = pipe.transformer
    applied = []
    if _enabled(options.fuse_qkv, cuda):
        transformer.fuse_qkv_projections()
        applied.append("fuse_qkv")
    backend = options.attention_backend or ("_native_cudnn" if cuda else None)
    if backend:
        transformer.set_attention_backend(backend)
        applied.append(f"attention={backend}")
    if options.fp8:
        from dataflow.serving.fp8 import convert_linears_to_fp8

        blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
        converted = sum(convert_linears_to_fp8(block) for block in blocks)
        applied.append(f"fp8_linears={converted}")
    if options.first_block_cache is not None:
        from diffusers.hooks import FirstBlockCacheConfig

        transformer.enable_cache(FirstBlockCacheConfig(threshold=options.first_block_cache))
        applied.append(f"first_block_cache={options.first_block_cache}")
    if _enabled(options.compile, cuda):
        transformer.compile_repeated_blocks(fullgraph=True)
        applied.append("compile_repeated_blocks")
    return applied


def denoiser_context(pipe: Any, options: Acceleration):
    """The context a pipeline call runs in: diffusers' cache context when the first-block cache is on.

    ``FluxKontextPipeline`` (diffusers 0.42) does not open a cache context around its transformer calls as
    ``FluxPipeline`` does, and the cache refuses to run without one. Kontext makes only conditional calls, so one
    context around the whole call is equivalent; the pipeline resets the cache's state at the end of each call.
    """
    if options.first_block_cache is None:
        return contextlib.nullcontext()
    return pipe.transformer.cache_context("cond")


def _enabled(choice: Optional[bool], cuda: bool) -> bool:
    return cuda if choice is None else choice
