"""FLUX single-stream blocks without the concatenation in front of their output projection.

A single-stream block ends with ``proj_out(cat([attention, gelu(mlp)]))``: it copies a 15,360-wide activation for
every token (about 270 MB per block at 1024x1024) only to multiply it at once. Projecting each part with its half of
the weight and adding, ``attention @ Wa.T + gelu(mlp) @ Wm.T + b``, is the same product: the GEMMs read their
inputs where they are, and the kernel that builds the concatenation (a visible share of a compiled step in the
kernel profiles, docs/performance.md) is gone. The two partial products are rounded separately before the sum, a
float-rounding difference like fusing QKV.

The block's forward is replaced on the instance (as diffusers' own hooks do), computing what diffusers' block
computes. Before any block is changed, the new forward is checked against the block's own on a few random tokens;
if a diffusers release changes the block and they disagree, nothing is changed and a warning says so.
"""

from __future__ import annotations

import inspect
import types
from typing import Any, Optional

import torch
from torch import nn

from dataflow.logger import get_logger

logger = get_logger()

_FORWARD_PARAMETERS = ["self", "hidden_states", "encoder_hidden_states", "temb", "image_rotary_emb",
                       "joint_attention_kwargs"]
_CHECK_TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 2e-2}


def split_forward(self: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                  temb: torch.Tensor, image_rotary_emb: Optional[tuple] = None,
                  joint_attention_kwargs: Optional[dict] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The single-stream block with ``proj_out`` applied to the attention and MLP parts separately."""
    text_tokens = encoder_hidden_states.shape[1]
    joined = torch.cat([encoder_hidden_states, hidden_states], dim=1)
    normed, gate = self.norm(joined, emb=temb)
    attention = self.attn(hidden_states=normed, image_rotary_emb=image_rotary_emb, **(joint_attention_kwargs or {}))
    projected = self.proj_out_attn(attention) + self.proj_out_mlp(self.act_mlp(self.proj_mlp(normed)))
    joined = joined + gate.unsqueeze(1) * projected
    if joined.dtype == torch.float16:
        joined = joined.clip(-65504, 65504)
    return joined[:, :text_tokens], joined[:, text_tokens:]


def split_single_block_projections(transformer: nn.Module) -> int:
    """Give every single-stream block of ``transformer`` the split output projection; return how many.

    Returns 0 (and changes nothing) when the blocks are not laid out as expected or the check disagrees.
    """
    blocks = list(getattr(transformer, "single_transformer_blocks", []))
    if not blocks or not _has_expected_layout(blocks[0]):
        logger.warning("split_proj_out: the single-stream blocks are not laid out as expected; left unchanged")
        return 0
    first = _split_weights(blocks[0])
    disagreement = _check(blocks[0], *first)
    if disagreement is not None:
        logger.warning("split_proj_out: the split block differs from diffusers' by %.2g (relative); left "
                       "unchanged", disagreement)
        return 0
    for index, block in enumerate(blocks):  # one block at a time: at most one extra proj_out in memory
        block.proj_out_attn, block.proj_out_mlp = first if index == 0 else _split_weights(block)
        del block.proj_out
        block.forward = types.MethodType(split_forward, block)
    return len(blocks)


def _has_expected_layout(block: nn.Module) -> bool:
    parameters = list(inspect.signature(type(block).forward).parameters)
    parts = (getattr(block, name, None) for name in ("norm", "attn", "proj_mlp", "act_mlp", "proj_out"))
    return parameters == _FORWARD_PARAMETERS and all(part is not None for part in parts) and \
        isinstance(block.proj_out, nn.Linear) and hasattr(block.proj_mlp, "out_features")


def _split_weights(block: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    """Two linears holding the attention and the MLP columns of ``block.proj_out`` (bias in the MLP one)."""
    proj_out = block.proj_out
    mlp_width = block.proj_mlp.out_features
    attn_width = proj_out.in_features - mlp_width
    weight = proj_out.weight.detach()
    attn_part = _linear(weight[:, :attn_width], None)
    mlp_part = _linear(weight[:, attn_width:], None if proj_out.bias is None else proj_out.bias.detach())
    return attn_part, mlp_part


def _linear(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    layer.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias, requires_grad=False)
    return layer


def _check(block: nn.Module, attn_part: nn.Linear, mlp_part: nn.Linear, tokens: int = 8,
           text_tokens: int = 4) -> Optional[float]:
    """None if the split forward matches the block's own on random tokens, else their relative difference."""
    weight = block.proj_out.weight
    dim = block.proj_out.out_features
    generator = torch.Generator("cpu").manual_seed(0)

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(weight.device, weight.dtype)

    inputs: dict[str, Any] = dict(hidden_states=random(1, tokens, dim), encoder_hidden_states=random(1, text_tokens, dim),
                                  temb=random(1, dim))
    probe = types.SimpleNamespace(norm=block.norm, attn=block.attn, proj_mlp=block.proj_mlp, act_mlp=block.act_mlp,
                                  proj_out_attn=attn_part, proj_out_mlp=mlp_part)
    with torch.inference_mode():
        expected = torch.cat(type(block).forward(block, **inputs), dim=1).float()
        got = torch.cat(split_forward(probe, **inputs), dim=1).float()
    difference = float((got - expected).norm() / expected.norm().clamp(min=1e-12))
    return None if difference <= _CHECK_TOLERANCE.get(weight.dtype, 2e-2) else difference
