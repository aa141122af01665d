"""FP8 linear layers on ``torch._scaled_mm``: dynamic scales for activations, static scales for weights.

Two scalings:
- ``tensorwise``: one scale per activation tensor and one per weight matrix (cuBLAS FP8 GEMM).
- ``rowwise``: one scale per activation row (token) and one per output channel. Finer, so more accurate, and under
  ``torch.compile`` the row maximum fuses with the norm/modulation kernel that produces the activation.

Lossy (a small relative difference in a transformer step; docs/performance.md has the measured figures), for about
twice the GEMM throughput of bf16 on Hopper-class GPUs. Weights are quantized once when a layer is converted; activations are scaled per call. The GEMMs
use the fast FP8 accumulation mode, as torchao does for inference.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from dataflow.serving.diffusers.speed.options import FP8_SCALINGS

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max


def quantize(tensor: torch.Tensor, rowwise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``tensor`` (2-D) as FP8 e4m3 with float32 scales, so that ``fp8 * scale`` approximates it.

    The scale is one number, or with ``rowwise`` a column of one number per row.
    """
    amax = tensor.abs().amax(dim=-1, keepdim=True) if rowwise else tensor.abs().amax()
    scale = (amax.float() / FP8_MAX).clamp(min=1e-12)
    return (tensor.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


class Fp8Linear(nn.Module):
    """A drop-in replacement for ``nn.Linear`` whose matmul runs in FP8."""

    def __init__(self, linear: nn.Linear, scaling: str = "tensorwise"):
        super().__init__()
        if scaling not in FP8_SCALINGS:
            raise ValueError(f"scaling must be one of {', '.join(FP8_SCALINGS)}, got {scaling!r}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.rowwise = scaling == "rowwise"
        weight, scale = quantize(linear.weight.detach(), self.rowwise)
        # _scaled_mm wants its second operand column-major: the transpose of a row-major (out, in) matrix is.
        # Its scale is then (1, out) for rowwise: one per output channel.
        # Parameters, not buffers: diffusers' group offload with a CUDA stream (0.42) returns a block's parameters
        # to the CPU after use but leaves its modules' buffers on the GPU, which then hold every block's FP8
        # weights at once (docs/performance.md, group offload).
        self.weight_fp8 = nn.Parameter(weight, requires_grad=False)
        self.weight_scale = nn.Parameter(scale.reshape(1, -1) if self.rowwise else scale, requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        x_fp8, x_scale = quantize(flat, self.rowwise)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        # The tensorwise GEMM adds the bias in its epilogue; for rowwise it is added after (under torch.compile the
        # add fuses into the next elementwise kernel), which keeps to the GEMM form every backend supports.
        out = torch._scaled_mm(x_fp8, self.weight_fp8.t(), scale_a=x_scale, scale_b=self.weight_scale,
                               bias=None if self.rowwise else bias, out_dtype=x.dtype, use_fast_accum=True)
        if self.rowwise and bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], self.out_features)


def convert_linears_to_fp8(module: nn.Module, scaling: str = "tensorwise",
                           skip: Optional[Callable[[str], bool]] = None, prefix: str = "") -> int:
    """Replace every ``nn.Linear`` below ``module`` whose dotted name ``skip`` rejects not; return how many."""
    count = 0
    for name, child in list(module.named_children()):
        path = f"{prefix}{name}"
        if skip is not None and skip(path):
            continue
        if isinstance(child, nn.Linear):
            setattr(module, name, Fp8Linear(child, scaling))
            count += 1
        else:
            count += convert_linears_to_fp8(child, scaling, skip, f"{path}.")
    return count


def is_modulation(path: str) -> bool:
    """The adaptive-norm linears (``norm1.linear``, ``norm.linear``…; Qwen-Image's ``img_mod``, ``txt_mod``) map the
    timestep embedding to per-block scales, shifts and gates: one row per image, so FP8 saves nothing there and
    would only add error."""
    return any(part.startswith("norm") or part.endswith("_mod") for part in path.split("."))
