"""FP8 attention with a smoothed K (opt-in, lossy), on one of two kernels.

- ``triton`` (the default of ``--fp8-attention``): this project's Triton kernel, per-block scales in the manner of
  SageAttention2 (below). Accurate, but slower than the bf16 cuDNN attention it replaces (docs/performance.md).
- ``cudnn``: cuDNN's fused FP8 SDPA through ``nvidia-cudnn-frontend`` (``fp8_attention_cudnn``): one scale per
  tensor, Hopper and newer. Its kernel alone is faster than bf16 attention; it becomes the default once a committed
  GPU run shows the whole pipeline faster with it than with the Triton kernel.

Both have a plain-torch reference with every FP8 rounding emulated (``fp8_attention_math``: ``reference_attention``
and ``tensorwise_reference_attention``), so that their numerics are checked on any machine.

The blockwise algorithm of the Triton kernel (``fp8_attention_kernel``) and its reference:

1. K is smoothed: its mean over the tokens of each head is subtracted. Every score of a query row changes by the
   same amount, which softmax ignores, and K's large per-channel offsets (the outliers that make one FP8 scale per
   tensor useless) are gone before quantization.
2. Q is quantized to FP8 e4m3 with one scale per block of ``BLOCK_M`` query rows, K with one per block of
   ``BLOCK_N`` key rows (``amax / 448``); the softmax scale and log2(e) are folded into Q's scales.
3. Each Q block meets each K block in one FP8 product with float32 accumulation, and an online softmax in base 2
   keeps a running row maximum and row sum.
4. P (in [0, 1] after the running maximum is subtracted) is quantized with the fixed scale 448, V with one scale
   per channel (over all tokens); P·V is a second FP8 product with float32 accumulation, rescaled at the end.

``reference_attention`` emulates each FP8 rounding with a cast to ``torch.float8_e4m3fn`` and back, so the
numerics can be checked on any machine; the kernel runs the same steps with FP8 tensor-core products on NVIDIA
GPUs of compute capability 8.9 or newer (Ada, Hopper, Blackwell).

``Fp8AttentionForward`` puts it into a diffusers transformer: while the transformer's forward runs, a
``TorchFunctionMode`` sends every ``scaled_dot_product_attention`` call that the kernel can take (no mask, no
dropout, not causal, a supported head size) to it. diffusers' native and cuDNN attention backends end in that
call for every model family, so the attention processors stay diffusers' own; the VAE and the text encoders, run
outside the transformer, keep exact attention.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dataflow.logger import get_logger
from dataflow.serving.diffusers.speed import fp8_attention_cudnn
from dataflow.serving.diffusers.speed.fp8_attention_cudnn import cudnn_attention
from dataflow.serving.diffusers.speed.fp8_attention_math import (
    quantize_inputs,
    reference_attention,
    tensorwise_reference_attention,
)

logger = get_logger()

HEAD_DIMS = (64, 128)  # head sizes the kernel is built for; other sizes keep exact attention
MIN_CAPABILITY = (8, 9)  # FP8 tensor-core products


def unavailable_reason(device: Any, implementation: str = "triton") -> Optional[str]:
    """Why the FP8 attention ``implementation`` ("triton" or "cudnn") cannot run on ``device``, or None when it can."""
    if implementation == "cudnn":
        return fp8_attention_cudnn.unavailable_reason(device)
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available() or torch.version.hip is not None:
        return f"it needs an NVIDIA GPU with FP8 tensor cores (compute capability 8.9+), not {device}"
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        return (f"{torch.cuda.get_device_name(device)} has compute capability {capability[0]}.{capability[1]}; "
                "FP8 tensor cores need 8.9 or newer (L4, L40, H100, H200, B200)")
    try:
        import triton  # noqa: F401  (CUDA builds of torch ship it)
    except ImportError:
        return "its kernel is written in Triton, which is not installed (pip install triton)"
    return None


def kernel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
    """The Triton kernel on ``quantize_inputs``' output (imported on first use: Triton is optional)."""
    from dataflow.serving.diffusers.speed.fp8_attention_kernel import attention_from_fp8

    return attention_from_fp8(*quantize_inputs(q, k, v, scale), out_dtype=q.dtype)


# The kernels by name, and their plain-torch references (any device: slow, for checks).
IMPLEMENTATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "triton": kernel_attention,
    "cudnn": cudnn_attention,
    "reference": reference_attention,
    "tensorwise_reference": tensorwise_reference_attention,
}


def sdpa_arguments(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False) -> dict:
    """``scaled_dot_product_attention``'s arguments by name, however they were passed."""
    return dict(query=query, key=key, value=value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                scale=scale, enable_gqa=enable_gqa)


def takes(arguments: dict) -> bool:
    """Whether an SDPA call is one the FP8 kernel computes: plain attention over same-shaped 4-D inputs."""
    q, k, v = arguments["query"], arguments["key"], arguments["value"]
    return (arguments["attn_mask"] is None and not arguments["dropout_p"] and not arguments["is_causal"]
            and q.dim() == 4 and k.shape == v.shape and q.shape[:2] == k.shape[:2] and q.shape[-1] == k.shape[-1]
            and q.shape[-1] in HEAD_DIMS and q.dtype in (torch.bfloat16, torch.float16))


class Fp8AttentionMode(TorchFunctionMode):
    """While active, ``scaled_dot_product_attention`` calls the kernel can take go to ``attention``."""

    def __init__(self, attention: Callable[..., torch.Tensor], accepts: Callable[[dict], bool] = takes):
        super().__init__()
        self.attention = attention
        self.accepts = accepts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            arguments = sdpa_arguments(*args, **kwargs)
            if self.accepts(arguments):
                return self.attention(arguments["query"], arguments["key"], arguments["value"], arguments["scale"])
        name = getattr(func, "__name__", None)
        if name and args and isinstance(args[0], torch.Tensor) and getattr(torch.Tensor, name, None) is func:
            # A tensor method: called as one, so that torch.compile traces it as it does without a mode (some are
            # written in Python around ``super()``, which it cannot trace when called as a plain function).
            return getattr(args[0], name)(*args[1:], **kwargs)
        return func(*args, **kwargs)


class Fp8AttentionForward:
    """A transformer's forward run with FP8 attention.

    Args:
        forward: the transformer's forward, as it was.
        implementation: "triton" (the Triton kernel; FP8 GPUs), "cudnn" (cuDNN's FP8 SDPA; Hopper and newer), or
            their plain-torch emulations "reference" and "tensorwise_reference" (any device: slow, for checks).
        accepts: which SDPA calls to take (by their arguments); the others stay exact.
    """

    def __init__(self, forward: Callable, implementation: str = "triton", accepts: Callable[[dict], bool] = takes):
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, got {implementation!r}")
        self.forward = forward
        self.implementation = implementation
        self.accepts = accepts

    def __call__(self, *args, **kwargs):
        with Fp8AttentionMode(IMPLEMENTATIONS[self.implementation], self.accepts):
            return self.forward(*args, **kwargs)


def use_fp8_attention(transformer: Any, implementation: str = "triton",
                      accepts: Callable[[dict], bool] = takes) -> None:
    """Run ``transformer``'s attention in FP8 from now on (its forward is replaced on the instance)."""
    transformer.forward = Fp8AttentionForward(transformer.forward, implementation, accepts)
