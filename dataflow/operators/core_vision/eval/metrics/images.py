"""The images a metric compares: PIL RGB, the edit against its item's first source."""

from __future__ import annotations

from typing import Any, Sequence

from dataflow.operators.core_vision.eval.metric import ScoreItem, ScoreResult


def rgb(image: Any) -> Any:
    """``image`` as a PIL RGB image."""
    return image if getattr(image, "mode", None) == "RGB" else image.convert("RGB")


def source_and_edit(item: ScoreItem) -> tuple[Any, Any]:
    """(first source, edit) as RGB images; ``ValueError`` if the item has no source. The first source is the
    one that was edited; further sources (references) are not compared."""
    if not item.sources:
        raise ValueError("the item has no source image to compare the edit with")
    return rgb(item.sources[0]), rgb(item.edited)


def split_usable(items: Sequence[ScoreItem]) -> tuple[list, list[int], list[tuple[Any, Any]]]:
    """(results so far: an error for each item without a source, None for the others; the others' indices;
    their (source, edit) pairs)."""
    results: list = [None] * len(items)
    usable, pairs = [], []
    for i, item in enumerate(items):
        try:
            pairs.append(source_and_edit(item))
            usable.append(i)
        except ValueError as exc:
            results[i] = ScoreResult(error=str(exc))
    return results, usable, pairs
