"""FP8 attention on cuDNN's fused FP8 SDPA (``sdpa_fp8``), through NVIDIA's ``nvidia-cudnn-frontend`` graph API.

The algorithm is the per-tensor one of ``fp8_attention_math`` (``quantize_tensorwise``, ``tensorwise_core``): K
smoothed, one scale each for Q, K and V, P at the fixed scale 448, the output in FP8 (Hopper's kernels write FP8
only) at 448 / max|V|, dequantized after. ``cudnn_attention`` is plain torch around one custom op
(``dataflow::cudnn_fp8_attention``): inside a regionally compiled block, ``torch.compile`` traces and fuses the
smoothing, the scales and the casts into the kernels around the call, and keeps the op itself opaque. Done eagerly
around the kernel, that quantization costs more than the FP8 kernel saves (docs/performance.md).

The op's CUDA kernel builds one cuDNN graph per input shape, layout and softmax scale (a second or so, once) and
executes it on torch's current stream. Its CPU kernel is ``tensorwise_core``, the same computation emulated in
plain torch, so that the wiring (the op inside compiled blocks) can be tested on machines without a GPU.

It needs an NVIDIA GPU of compute capability 9.0 or newer (cuDNN's FP8 attention runs on Hopper and Blackwell) and
``pip install nvidia-cudnn-frontend==1.16.0``: that version needs no other package (newer ones pull in NVIDIA's
CUTLASS DSL) and is the one measured.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

import torch

from dataflow.serving.diffusers.speed.fp8_attention_math import (
    FP8,
    FP8_MAX,
    dequantize_output,
    quantize_tensorwise,
    tensorwise_core,
)

MIN_CAPABILITY = (9, 0)
FRONTEND = "nvidia-cudnn-frontend==1.16.0"
SCALAR = (1, 1, 1, 1)

_lock = threading.Lock()
_graphs: dict = {}  # (device, shapes, strides, softmax scale) -> _Graph
_handles: dict = {}  # device index -> cuDNN handle


def frontend_missing() -> Optional[str]:
    """Why cuDNN's Python frontend cannot be imported, with the command that installs it, or None."""
    try:
        import cudnn  # noqa: F401
    except ImportError:
        return f"it runs through NVIDIA's cuDNN frontend, which is not installed (pip install {FRONTEND})"
    return None


def unavailable_reason(device: Any) -> Optional[str]:
    """Why cuDNN's FP8 attention cannot run on ``device``, or None when it can."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available() or torch.version.hip is not None:
        return f"cuDNN's FP8 attention needs an NVIDIA GPU of compute capability 9.0+ (Hopper, Blackwell), not {device}"
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        return (f"{torch.cuda.get_device_name(device)} has compute capability {capability[0]}.{capability[1]}; "
                "cuDNN's FP8 attention needs 9.0 or newer (H100, H200, B200)")
    return frontend_missing()


def cudnn_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
    """Attention of (batch, heads, tokens, head_dim) inputs through cuDNN's FP8 SDPA; returns ``q``'s dtype."""
    softmax_scale = q.shape[-1] ** -0.5 if scale is None else scale
    inputs = quantize_tensorwise(q, k, v)
    out = torch.ops.dataflow.cudnn_fp8_attention(*inputs, float(softmax_scale))
    return dequantize_output(out, inputs.scale_o, q.dtype)


def _output_like(q: torch.Tensor) -> torch.Tensor:
    """An FP8 (batch, heads, tokens, head_dim) tensor laid out as (batch, tokens, heads, head_dim): the layout
    diffusers turns the result back into, so that its permute and flatten copy nothing."""
    batch, heads, tokens, dim = q.shape
    return q.new_empty((batch, tokens, heads, dim), dtype=FP8).permute(0, 2, 1, 3)


@torch.library.custom_op("dataflow::cudnn_fp8_attention", mutates_args=())
def cudnn_fp8_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, descale_q: torch.Tensor,
                        descale_k: torch.Tensor, descale_v: torch.Tensor, scale_o: torch.Tensor,
                        softmax_scale: float) -> torch.Tensor:
    """FP8 attention from FP8 inputs (``TensorwiseInputs``); returns the FP8 output at ``scale_o``."""
    out = _output_like(q)
    if q.device.type != "cuda":  # the same computation emulated, in the layout the CUDA kernel writes
        return out.copy_(tensorwise_core(q, k, v, descale_q, descale_k, descale_v, scale_o, softmax_scale))
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    graph = _graph_for(q, k, v, out, softmax_scale)
    graph.execute(q, k, v, descale_q, descale_k, descale_v, scale_o, out)
    return out


@cudnn_fp8_attention.register_fake
def _(q, k, v, descale_q, descale_k, descale_v, scale_o, softmax_scale):
    return _output_like(q)


def _handle(device: torch.device) -> Any:
    import cudnn

    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _handles:
        with torch.cuda.device(index):
            _handles[index] = cudnn.create_handle()
    return _handles[index]


def _graph_for(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, softmax_scale: float) -> "_Graph":
    key = (q.device, q.dtype, tuple(q.shape), q.stride(), tuple(k.shape), k.stride(), v.stride(), out.stride(),
           softmax_scale)
    with _lock:
        if key not in _graphs:
            _graphs[key] = _Graph(q, k, v, out, softmax_scale, _handle(q.device))
        return _graphs[key]


class _Graph:
    """One built cuDNN FP8 SDPA graph for one shape and layout, with the constant tensors it reads."""

    def __init__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, softmax_scale: float,
                 handle: Any):
        import cudnn

        self.handle = handle
        e4m3, fp32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
        graph = cudnn.pygraph(io_data_type=e4m3, intermediate_data_type=fp32, compute_data_type=fp32, handle=handle)

        def tensor(name, like):
            return graph.tensor(name=name, dim=list(like.shape), stride=list(like.stride()), data_type=e4m3)

        self.q, self.k, self.v = tensor("q", q), tensor("k", k), tensor("v", v)
        scalar = dict(dim=list(SCALAR), stride=list(SCALAR), data_type=fp32)
        self.descales = [graph.tensor(name=name, **scalar) for name in ("descale_q", "descale_k", "descale_v")]
        self.descale_s, self.scale_s, self.scale_o = (graph.tensor(name=name, **scalar)
                                                      for name in ("descale_s", "scale_s", "scale_o"))
        self.o, _, self.amax_s, self.amax_o = graph.sdpa_fp8(
            q=self.q, k=self.k, v=self.v, descale_q=self.descales[0], descale_k=self.descales[1],
            descale_v=self.descales[2], descale_s=self.descale_s, scale_s=self.scale_s, scale_o=self.scale_o,
            is_inference=True, attn_scale=softmax_scale, use_causal_mask=False, name="sdpa_fp8")
        self.o.set_output(True).set_dim(list(out.shape)).set_stride(list(out.stride())).set_data_type(e4m3)
        for amax in (self.amax_s, self.amax_o):
            amax.set_output(True).set_dim(list(SCALAR)).set_stride(list(SCALAR)).set_data_type(fp32)
        try:
            graph.validate()
            graph.build_operation_graph()
            graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
            graph.check_support()
            graph.build_plans()
        except Exception as exc:
            raise RuntimeError(f"cuDNN has no FP8 attention for q {tuple(q.shape)} k {tuple(k.shape)} "
                               f"(strides {q.stride()}, {k.stride()}, {v.stride()}): {exc}") from exc
        self.graph = graph
        device = q.device
        # P lies in [0, 1]: the fixed scale 448 maps it onto the whole FP8 range (as fp8_attention_math's P_SCALE).
        self.p_scale = torch.full(SCALAR, FP8_MAX, device=device, dtype=torch.float32)
        self.p_descale = torch.full(SCALAR, 1.0 / FP8_MAX, device=device, dtype=torch.float32)
        self.amax_buffers = [torch.empty(SCALAR, device=device, dtype=torch.float32) for _ in range(2)]
        self.workspace_size = graph.get_workspace_size()

    def execute(self, q, k, v, descale_q, descale_k, descale_v, scale_o, out) -> None:
        import cudnn

        workspace = torch.empty(self.workspace_size, device=q.device, dtype=torch.uint8)
        cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream(q.device).cuda_stream)
        variants = {self.q: q, self.k: k, self.v: v, self.descales[0]: descale_q, self.descales[1]: descale_k,
                    self.descales[2]: descale_v, self.descale_s: self.p_descale, self.scale_s: self.p_scale,
                    self.scale_o: scale_o, self.o: out, self.amax_s: self.amax_buffers[0],
                    self.amax_o: self.amax_buffers[1]}
        self.graph.execute(variants, workspace, handle=self.handle)
