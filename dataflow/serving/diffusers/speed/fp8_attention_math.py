"""The blockwise FP8 attention algorithm in plain torch: quantizing the inputs, and the reference computation.

The steps are listed in ``fp8_attention``'s docstring. The Triton kernel (``fp8_attention_kernel``) takes what
``quantize_inputs`` returns and must compute what ``reference_attention`` computes, whose FP8 roundings are
emulated with casts to ``torch.float8_e4m3fn`` and back, so the numerics can be checked on any machine.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
P_SCALE = FP8_MAX  # P lies in [0, 1]: one fixed scale maps it onto the whole FP8 range
BLOCK_M = 128  # query rows per Q scale (and per kernel tile)
BLOCK_N = 64  # key rows per K scale (and per kernel tile)
LOG2E = math.log2(math.e)


class QuantizedInputs(NamedTuple):
    """Attention inputs in FP8, as both implementations take them.

    ``q`` and ``k`` keep the (batch, heads, tokens, head_dim) layout; ``v_t`` is V transposed to (batch, heads,
    head_dim, tokens), contiguous, so that the P·V product reads it along its reduction axis. ``q_scale`` (batch,
    heads, query blocks) includes the softmax scale and log2(e); ``k_scale`` is (batch, heads, key blocks) and
    ``v_scale`` (batch, heads, head_dim).
    """

    q: torch.Tensor
    q_scale: torch.Tensor
    k: torch.Tensor
    k_scale: torch.Tensor
    v_t: torch.Tensor
    v_scale: torch.Tensor


def to_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x / scale`` rounded to FP8 e4m3 (saturating at +-448)."""
    return (x / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)


def blockwise_scales(x: torch.Tensor, block: int) -> torch.Tensor:
    """One scale per block of ``block`` tokens of each head: the block's largest magnitude over 448.

    ``x`` is (batch, heads, tokens, head_dim) float32; returns (batch, heads, ceil(tokens / block)).
    """
    batch, heads, tokens, dim = x.shape
    padded = F.pad(x, (0, 0, 0, -tokens % block))
    amax = padded.abs().reshape(batch, heads, -1, block * dim).amax(dim=-1)
    return (amax / FP8_MAX).clamp(min=1e-12)


def per_row(scales: torch.Tensor, block: int, tokens: int) -> torch.Tensor:
    """Block scales (batch, heads, blocks) repeated for each token: (batch, heads, tokens, 1)."""
    return scales.repeat_interleave(block, dim=-1)[..., :tokens, None]


def quantize_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    scale: Optional[float] = None) -> QuantizedInputs:
    """Smooth K, then quantize Q and K per block and V per channel (see the module docstring).

    ``q``, ``k``, ``v`` are (batch, heads, tokens, head_dim) in any layout; ``scale`` is the softmax scale
    (default ``head_dim ** -0.5``).
    """
    softmax_scale = q.shape[-1] ** -0.5 if scale is None else scale
    q32, k32, v32 = q.float(), k.float(), v.float()
    k32 = k32 - k32.mean(dim=-2, keepdim=True)
    q_scale = blockwise_scales(q32, BLOCK_M)
    k_scale = blockwise_scales(k32, BLOCK_N)
    v_scale = (v32.abs().amax(dim=-2) / FP8_MAX).clamp(min=1e-12)
    return QuantizedInputs(
        q=to_fp8(q32, per_row(q_scale, BLOCK_M, q.shape[-2])),
        q_scale=q_scale * (softmax_scale * LOG2E),
        k=to_fp8(k32, per_row(k_scale, BLOCK_N, k.shape[-2])),
        k_scale=k_scale,
        v_t=to_fp8(v32, v_scale[..., None, :]).transpose(-1, -2).contiguous(),
        v_scale=v_scale,
    )


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        scale: Optional[float] = None) -> torch.Tensor:
    """The kernel's algorithm in plain torch, FP8 roundings emulated: what the kernel must compute, on any device.

    Key blocks are visited in order with an online softmax, as the kernel does, so that P is quantized against the
    same running maximum. Returns (batch, heads, tokens, head_dim) in ``q``'s dtype.
    """
    inputs = quantize_inputs(q, k, v, scale)
    tokens, keys = q.shape[-2], k.shape[-2]
    q_fp8, q_scale = inputs.q.float(), per_row(inputs.q_scale, BLOCK_M, tokens)
    v_fp8 = inputs.v_t.transpose(-1, -2).float()
    row_max = torch.full(q.shape[:-1], -math.inf, device=q.device)
    row_sum = torch.zeros(q.shape[:-1], device=q.device)
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], device=q.device)
    for index, start in enumerate(range(0, keys, BLOCK_N)):
        k_block = inputs.k[..., start:start + BLOCK_N, :].float()
        scores = (q_fp8 @ k_block.transpose(-1, -2)) * (q_scale * inputs.k_scale[..., index, None, None])
        new_max = torch.maximum(row_max, scores.amax(dim=-1))
        alpha = torch.exp2(row_max - new_max)
        p = torch.exp2(scores - new_max[..., None])
        row_sum = row_sum * alpha + p.sum(dim=-1)
        p_fp8 = (p * P_SCALE).to(FP8).float()
        acc = acc * alpha[..., None] + p_fp8 @ v_fp8[..., start:start + BLOCK_N, :]
        row_max = new_max
    out = acc * inputs.v_scale[..., None, :] / (row_sum[..., None] * P_SCALE)
    return out.to(q.dtype)


# -- The per-tensor variant, as cuDNN's FP8 attention computes it (``fp8_attention_cudnn``) ------------------------
# One scale per tensor for Q, K and V (cuDNN's FP8 SDPA takes scalar descales), K smoothed first as above, P
# quantized with the fixed scale 448 as above, and the output itself in FP8 (Hopper's kernels write FP8 only), scaled
# by 448 / max|V|: each output row is a convex combination of V's rows, so it never exceeds V's largest magnitude.


class TensorwiseInputs(NamedTuple):
    """Attention inputs in FP8 with one scale each, as cuDNN's ``sdpa_fp8`` takes them.

    ``q``, ``k``, ``v`` are FP8 e4m3 in the (batch, heads, tokens, head_dim) shape and layout they came in; the
    descales (what multiplies an FP8 value back to its real one) and the output's scale are (1, 1, 1, 1) float32.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    descale_q: torch.Tensor
    descale_k: torch.Tensor
    descale_v: torch.Tensor
    scale_o: torch.Tensor


def tensor_scale(x: torch.Tensor) -> torch.Tensor:
    """448 over ``x``'s largest magnitude, as a (1, 1, 1, 1) float32 tensor: ``x * scale`` spans the FP8 range."""
    return (FP8_MAX / x.abs().amax().float().clamp(min=1e-12)).reshape(1, 1, 1, 1)


def quantize_tensorwise(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> TensorwiseInputs:
    """Smooth K (subtract its mean over the tokens of each head), then quantize Q, K and V with one scale each.

    Plain tensor operations, so that ``torch.compile`` fuses them into the block around the attention call.
    """
    q32, k32, v32 = q.float(), k.float(), v.float()
    k32 = k32 - k32.mean(dim=-2, keepdim=True)
    scales = [tensor_scale(t) for t in (q32, k32, v32)]
    q8, k8, v8 = (to_fp8(t, 1.0 / s) for t, s in zip((q32, k32, v32), scales))
    return TensorwiseInputs(q=q8, k=k8, v=v8, descale_q=1.0 / scales[0], descale_k=1.0 / scales[1],
                            descale_v=1.0 / scales[2], scale_o=scales[2])


def tensorwise_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, descale_q: torch.Tensor,
                    descale_k: torch.Tensor, descale_v: torch.Tensor, scale_o: torch.Tensor,
                    softmax_scale: float) -> torch.Tensor:
    """What cuDNN's FP8 SDPA computes from FP8 inputs, FP8 roundings emulated: the FP8 output, (batch, heads,
    tokens, head_dim).

    Q·Kᵀ is exact in float32 (FP8 products accumulate in float32), then descaled; the softmax uses each row's
    maximum; P in [0, 1] is rounded to FP8 at the scale 448 (cuDNN's ``scale_s``), and the row sum taken before that
    rounding; the output is rounded to FP8 at ``scale_o``. cuDNN visits keys in tiles with a running maximum, so on
    a GPU P is rounded against a tile's maximum instead of the row's: the two differ by rounding only.
    """
    scores = (q.float() @ k.float().transpose(-1, -2)) * (descale_q * descale_k * softmax_scale)
    p = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    row_sum = p.sum(dim=-1, keepdim=True)
    p_fp8 = (p * P_SCALE).to(FP8).float()
    out = (p_fp8 @ v.float()) * (descale_v / P_SCALE) / row_sum
    return to_fp8(out, 1.0 / scale_o)


def dequantize_output(out_fp8: torch.Tensor, scale_o: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The FP8 output back in ``dtype``."""
    return (out_fp8.float() / scale_o).to(dtype)


def tensorwise_reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                   scale: Optional[float] = None) -> torch.Tensor:
    """The per-tensor algorithm of cuDNN's FP8 attention in plain torch, every FP8 rounding emulated, on any device.

    ``q``, ``k``, ``v`` are (batch, heads, tokens, head_dim); returns the same shape in ``q``'s dtype.
    """
    softmax_scale = q.shape[-1] ** -0.5 if scale is None else scale
    inputs = quantize_tensorwise(q, k, v)
    out = tensorwise_core(*inputs, softmax_scale=softmax_scale)
    return dequantize_output(out, inputs.scale_o, q.dtype)
