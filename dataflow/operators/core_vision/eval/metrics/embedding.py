"""``EmbeddingMetric``: the base of metrics that compare embeddings of an edit and its source (CLIP, DINOv2).

Items without a source image become their own errors; the rest are embedded together, sources and edits in one
forward pass per batch, and compared by cosine similarity.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Sequence

from dataflow.operators.core_vision.eval.metric import ScoreItem, ScoreResult
from dataflow.operators.core_vision.eval.metrics.hf_model import ModelMetric
from dataflow.operators.core_vision.eval.metrics.images import split_usable


def cosine(a: Any, b: Any) -> list[float]:
    """Row-wise cosine similarity of two batches of embeddings, in float32, clamped to [-1, 1]."""
    import torch

    similarity = torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
    return similarity.clamp(-1.0, 1.0).tolist()


def pooled(output: Any) -> Any:
    """The embedding tensor of a ``get_*_features`` call: transformers 5 returns a model output whose
    ``pooler_output`` holds it; 4.x returned the tensor itself."""
    return getattr(output, "pooler_output", output)


class EmbeddingMetric(ModelMetric):
    """Scores a batch by ``values(pairs, instructions)`` over its items that have a source."""

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        results, usable, pairs = split_usable(items)
        if usable:
            import torch

            with torch.inference_mode():
                values = self.values(pairs, [items[i].instruction for i in usable])
            for i, value in zip(usable, values):
                results[i] = ScoreResult(value)
        return results

    @abstractmethod
    def values(self, pairs: Sequence[tuple[Any, Any]], instructions: Sequence[str]) -> list[dict]:
        """The values of each (source, edit) pair, in order."""

    def pixels(self, images: Sequence[Any]) -> Any:
        """The image processor's pixels of ``images`` on the model's device and dtype."""
        net, processor = self.loaded()
        image_processor = getattr(processor, "image_processor", processor)
        pixels = image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        return pixels.to(device=self.device, dtype=net.dtype)
