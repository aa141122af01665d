"""Linear layer + tanh GELU in one cuBLASLt call (the GELU runs in the GEMM's epilogue).

FLUX's MLPs compute ``gelu(x @ W.T + b, approximate="tanh")``: 57 times per step on about 8,700 tokens times 12,288
channels. Unfused, the GELU is its own pass over that activation in the double-stream blocks, and in the
single-stream blocks it is folded into the kernel that also builds ``proj_out``'s input (the kernel profiles in
docs/performance.md). ``torch._addmm_activation(..., use_gelu=True)`` asks cuBLASLt for the GEMM with a
bias+GELU epilogue; its GELU is the tanh approximation, which is what FLUX uses, so the output differs only by
float rounding. Inductor keeps the op as one library call (it has no decomposition for it in its table).

On other devices, and for inputs cuBLASLt does not take, the layer computes the unfused expression.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_EPILOGUE_DTYPES = (torch.float16, torch.bfloat16)


class LinearGelu(nn.Module):
    """``gelu(linear(x), approximate="tanh")`` over an existing ``nn.Linear``'s parameters (no copy)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and self.bias is not None and x.dtype in _EPILOGUE_DTYPES and x.dtype == self.weight.dtype:
            flat = x.reshape(-1, self.in_features)
            out = torch._addmm_activation(self.bias, flat, self.weight.t(), use_gelu=True)
            return out.reshape(*x.shape[:-1], self.out_features)
        return F.gelu(F.linear(x, self.weight, self.bias), approximate="tanh")


def fuse_gelu_linears(module: nn.Module) -> int:
    """Swap each linear-then-tanh-GELU pair below ``module`` for a ``LinearGelu``; return how many.

    Two shapes occur in FLUX: diffusers' ``GELU`` activation module (a ``proj`` linear and ``approximate="tanh"``,
    the first layer of each ``FeedForward``), and a block's ``proj_mlp`` linear followed by its ``act_mlp``
    ``nn.GELU(approximate="tanh")`` (the single-stream blocks), where ``act_mlp`` becomes an identity.
    """
    from diffusers.models.activations import GELU

    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, GELU) and child.approximate == "tanh" and isinstance(child.proj, nn.Linear):
                setattr(parent, name, LinearGelu(child.proj))
                count += 1
        act = getattr(parent, "act_mlp", None)
        if isinstance(act, nn.GELU) and act.approximate == "tanh" and isinstance(getattr(parent, "proj_mlp", None),
                                                                                nn.Linear):
            parent.proj_mlp, parent.act_mlp = LinearGelu(parent.proj_mlp), nn.Identity()
            count += 1
    return count
