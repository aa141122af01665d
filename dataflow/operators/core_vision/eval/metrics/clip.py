"""``CLIPMetric``: CLIP-I (edit vs source) and CLIP-T (edit vs instruction) cosine similarities."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from dataflow.operators.core_vision.eval.metrics.embedding import EmbeddingMetric, cosine, pooled
from dataflow.operators.core_vision.eval.metrics.hf_model import dtype_option, load_pretrained

DEFAULT_MODEL = "openai/clip-vit-large-patch14"


class CLIPMetric(EmbeddingMetric):
    """CLIP similarities of an edit, from a ``transformers`` ``CLIPModel`` and ``CLIPProcessor``.

    Values:
        clip_i: cosine similarity of the source's and the edit's image embeddings (near 1: little changed).
        clip_t: cosine similarity of the edit's image embedding and the instruction's text embedding (a raw
            cosine, not CLIPScore's 2.5x or 100x scaling). An instruction longer than the text model's
            ``max_position_embeddings`` tokens (77 for OpenAI's CLIP) is truncated to that length.

    Args:
        model: a local folder or a Hub id holding a CLIP model and its processor; default
            ``openai/clip-vit-large-patch14``.
        batch_size: items per forward pass (each item is two images and one text).
        device: default CUDA when available, else CPU; ``use_device`` overrides it.
        dtype: default float32.
    """

    name = "clip"
    model_types = ("clip",)

    def __init__(self, model: str = DEFAULT_MODEL, *, batch_size: int = 16, device: Optional[str] = None,
                 dtype: Any = None):
        super().__init__(model, batch_size=batch_size, device=device, dtype=dtype)

    def load_model(self, transformers: Any, device: str, dtype: Any) -> tuple[Any, Any]:
        net = load_pretrained(transformers.CLIPModel, self.model, **dtype_option(transformers, dtype))
        return net, load_pretrained(transformers.CLIPProcessor, self.model)

    def values(self, pairs: Sequence[tuple[Any, Any]], instructions: Sequence[str]) -> list[dict]:
        net, processor = self.loaded()
        pixels = self.pixels([source for source, _ in pairs] + [edit for _, edit in pairs])
        images = pooled(net.get_image_features(pixel_values=pixels))
        sources, edits = images[: len(pairs)], images[len(pairs):]
        tokens = processor.tokenizer(list(instructions), padding=True, truncation=True, return_tensors="pt",
                                     max_length=net.config.text_config.max_position_embeddings)
        texts = pooled(net.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                             attention_mask=tokens["attention_mask"].to(self.device)))
        return [{"clip_i": i, "clip_t": t} for i, t in zip(cosine(sources, edits), cosine(edits, texts))]
