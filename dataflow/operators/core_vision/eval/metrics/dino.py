"""``DINOMetric``: DINOv2 similarity of an edit and its source (near 1: the edit changed little)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from dataflow.operators.core_vision.eval.metrics.embedding import EmbeddingMetric, cosine
from dataflow.operators.core_vision.eval.metrics.hf_model import dtype_option, load_pretrained

DEFAULT_MODEL = "facebook/dinov2-base"


class DINOMetric(EmbeddingMetric):
    """DINOv2 similarity from a ``transformers`` ``AutoModel`` and ``AutoImageProcessor``.

    Values:
        dino: cosine similarity of the source's and the edit's CLS embeddings (the final layer-normed CLS token,
            ``last_hidden_state[:, 0]``). DINOv2 embeds structure and identity more than CLIP does.

    Args:
        model: a local folder or a Hub id holding a DINOv2 model and its image processor; default
            ``facebook/dinov2-base``.
        batch_size: items per forward pass (each item is two images).
        device: default CUDA when available, else CPU; ``use_device`` overrides it.
        dtype: default float32.
    """

    name = "dino"
    model_types = ("dinov2",)  # dinov2 and dinov2_with_registers: the CLS token comes first in both

    def __init__(self, model: str = DEFAULT_MODEL, *, batch_size: int = 16, device: Optional[str] = None,
                 dtype: Any = None):
        super().__init__(model, batch_size=batch_size, device=device, dtype=dtype)

    def load_model(self, transformers: Any, device: str, dtype: Any) -> tuple[Any, Any]:
        net = load_pretrained(transformers.AutoModel, self.model, **dtype_option(transformers, dtype))
        return net, load_pretrained(transformers.AutoImageProcessor, self.model)

    def values(self, pairs: Sequence[tuple[Any, Any]], instructions: Sequence[str]) -> list[dict]:
        net, _ = self.loaded()
        pixels = self.pixels([source for source, _ in pairs] + [edit for _, edit in pairs])
        cls = net(pixel_values=pixels).last_hidden_state[:, 0]
        return [{"dino": value} for value in cosine(cls[: len(pairs)], cls[len(pairs):])]
