"""The transformer's forward compiled whole, each step replayed as CUDA graphs (``Acceleration(cuda_graphs=True)``).

Regional compilation leaves the GPU waiting between kernels for a few percent of a step (``busy`` in the
benchmark's profiles; docs/performance.md); one graph per step launches them all at once, and compiling the whole
forward also fuses across block boundaries.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._pytree import tree_map_only


class GraphedForward:
    """A module's forward compiled whole; with ``mode="reduce-overhead"`` on CUDA each call replays CUDA graphs.

    Each call starts a new step for the graphs (``cudagraph_mark_step_begin``) and returns tensors cloned out of
    their memory pool: the pipeline still holds the previous step's output when it makes the next call, which
    would otherwise overwrite it in place. The clone is one latent-sized copy per step.
    """

    def __init__(self, forward: Any, compile_kwargs: dict):
        self.compiled = torch.compile(forward, **compile_kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        torch.compiler.cudagraph_mark_step_begin()
        return tree_map_only(torch.Tensor, torch.clone, self.compiled(*args, **kwargs))
