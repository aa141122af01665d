"""The Triton kernel of ``fp8_attention``: FP8 Q·K^T and P·V with float32 accumulation and an online softmax.

Imported only when FP8 attention is used: it needs Triton (shipped with CUDA builds of torch). It takes what
``fp8_attention_math.quantize_inputs`` returns; one program computes ``BLOCK_M`` query rows of one head, visiting the
key blocks in order, as ``fp8_attention_math.reference_attention`` does.

The kernel is a ``torch.library`` custom op, so ``torch.compile`` keeps it as one opaque call inside a compiled
block (the quantization around it is traced and fused). Under Triton's interpreter (``TRITON_INTERPRET=1``, on the
CPU) the kernel rounds P onto the FP8 grid in float32 before its cast: the interpreter's float32-to-FP8 conversion
truncates instead of rounding to nearest even (and loses the carry into the exponent), while loads of FP8 tensors
and FP8 products are exact there. On a GPU the cast is the hardware's round-to-nearest-even conversion.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from dataflow.serving.diffusers.speed.fp8_attention_math import (
    BLOCK_M,
    BLOCK_N,
    P_SCALE,
)

# Launch configurations tried on the first call for each key length and head size (not under the interpreter).
CONFIGS = [triton.Config({}, num_warps=warps, num_stages=stages) for warps in (4, 8) for stages in (2, 3, 4)]


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter."""
    knobs = getattr(triton, "knobs", None)
    if knobs is not None and hasattr(knobs, "runtime"):
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _round_to_fp8_grid(x):
    """``x`` in [0, 448] rounded to the nearest FP8 e4m3 value (ties to even), computed in float32."""
    bits = x.to(tl.int32, bitcast=True)
    exponent = tl.maximum((bits >> 23) & 0xFF, 121)  # below 2^-6 the e4m3 spacing stays 2^-9 (subnormals)
    ulp = ((exponent - 3) << 23).to(tl.float32, bitcast=True)  # three mantissa bits
    return ((x / ulp + 12582912.0) - 12582912.0) * ulp  # 1.5 * 2^23: float32 addition rounds to an integer


@triton.jit
def _attention_kernel(Q, K, Vt, Qs, Ks, Vs, Out,
                      stride_qb, stride_qh, stride_qn, stride_qd,
                      stride_kb, stride_kh, stride_kn, stride_kd,
                      stride_vb, stride_vh, stride_vd, stride_vn,
                      stride_ob, stride_oh, stride_on, stride_od,
                      heads, n_q, n_k, q_blocks, k_blocks,
                      HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      P_SCALE: tl.constexpr, EMULATE_CAST: tl.constexpr):
    m_block = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // heads
    h = bh % heads
    rows = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows[:, None] < n_q
    q = tl.load(Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qn + dims[None, :] * stride_qd,
                mask=row_ok, other=0.0)
    q_scale = tl.load(Qs + bh * q_blocks + m_block)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = Vt + b * stride_vb + h * stride_vh
    row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for n_block in range(0, k_blocks):
        keys = n_block * BLOCK_N + cols
        key_ok = keys[None, :] < n_k
        k_t = tl.load(k_base + dims[:, None] * stride_kd + keys[None, :] * stride_kn, mask=key_ok, other=0.0)
        scores = tl.dot(q, k_t) * (q_scale * tl.load(Ks + bh * k_blocks + n_block))
        scores = tl.where(key_ok, scores, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(scores, 1))
        alpha = tl.exp2(row_max - new_max)
        p = tl.exp2(scores - new_max[:, None])
        row_sum = row_sum * alpha + tl.sum(p, 1)
        p = p * P_SCALE
        if EMULATE_CAST:
            p = _round_to_fp8_grid(p)
        v_t = tl.load(v_base + dims[:, None] * stride_vd + keys[None, :] * stride_vn, mask=key_ok, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(tl.float8e4nv), tl.trans(v_t))
        row_max = new_max
    v_scale = tl.load(Vs + bh * HEAD_DIM + dims)
    out = acc * v_scale[None, :] / (row_sum[:, None] * P_SCALE)
    tl.store(Out + b * stride_ob + h * stride_oh + rows[:, None] * stride_on + dims[None, :] * stride_od,
             out.to(Out.dtype.element_ty), mask=row_ok)


_tuned_kernel = triton.autotune(configs=CONFIGS, key=["n_k", "HEAD_DIM"])(_attention_kernel)


def _output_like(q: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, heads, tokens, head_dim), laid out as (batch, tokens, heads, head_dim): the layout diffusers turns
    the result back into, so that its permute and flatten copy nothing."""
    batch, heads, tokens, dim = q.shape
    return q.new_empty((batch, tokens, heads, dim), dtype=dtype).permute(0, 2, 1, 3)


@torch.library.custom_op("dataflow::fp8_attention", mutates_args=())
def attention_from_fp8(q: torch.Tensor, q_scale: torch.Tensor, k: torch.Tensor, k_scale: torch.Tensor,
                       v_t: torch.Tensor, v_scale: torch.Tensor, out_dtype: torch.dtype = torch.bfloat16
                       ) -> torch.Tensor:
    """Attention from FP8 inputs (``fp8_attention_math.QuantizedInputs``); returns (batch, heads, tokens, head_dim)."""
    batch, heads, n_q, dim = q.shape
    n_k = k.shape[-2]
    out = _output_like(q, out_dtype)
    q_scale, k_scale, v_scale = (t.float().contiguous() for t in (q_scale, k_scale, v_scale))
    grid = (triton.cdiv(n_q, BLOCK_M), batch * heads)
    emulate = interpreting()
    kernel = _attention_kernel if emulate else _tuned_kernel
    launch = dict(HEAD_DIM=dim, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, P_SCALE=P_SCALE, EMULATE_CAST=emulate)
    if emulate:
        launch.update(num_warps=4, num_stages=1)
    kernel[grid](q, k, v_t, q_scale, k_scale, v_scale, out,
                 *q.stride(), *k.stride(), *v_t.stride(), *out.stride(),
                 heads, n_q, n_k, q_scale.shape[-1], k_scale.shape[-1], **launch)
    return out


@attention_from_fp8.register_fake
def _(q, q_scale, k, k_scale, v_t, v_scale, out_dtype=torch.bfloat16):
    return _output_like(q, out_dtype)
