"""``MetricsServing``: a set of metrics behind the serving protocol, so scoring runs on the engines' driver.

The driver, the checkpoint and the engines know servings; a scoring job hands each row's source and edited
images to this serving, which returns, per edited image, ``{metric name: values}`` as ``EditResult.values``.
Resume, exactly-once and per-row errors are then those of generation.
"""

from __future__ import annotations

from typing import Sequence

from dataflow.core.errors import InputError
from dataflow.core.request import EditRequest, EditResult
from dataflow.core.serving import ImageEditServing
from dataflow.operators.core_vision.eval.metric import Metric, ScoreItem, ScoreResult


class MetricsServing(ImageEditServing):
    """Score every edited image of a batch of rows with each metric.

    Args:
        metrics: the metrics, each with a distinct ``name``.
        batch_size: rows per ``edit`` call (each metric batches the rows' edited images in its own batch size).
    """

    max_input_images = None  # every source image of a row reaches the metrics

    def __init__(self, metrics: Sequence[Metric], batch_size: int = 8):
        if not metrics:
            raise InputError("give at least one metric")
        names = [m.name for m in metrics]
        if len(set(names)) != len(names):
            raise InputError(f"each metric may be given once, got {', '.join(names)}")
        for metric in metrics:
            metric.check_dependencies()  # a missing extra is said now, before any row is read
        self.metrics = list(metrics)
        self.batch_size = batch_size
        self.concurrency = max(m.concurrency for m in self.metrics)
        if self.concurrency > 1:
            self.batch_size = 1  # a remote judge: each row's scores reach the checkpoint as its requests return

    @property
    def display_name(self) -> str:
        return "scoring (" + ", ".join(m.name for m in self.metrics) + ")"

    def fingerprint(self) -> dict:
        return {"serving": "scores", "metrics": [m.fingerprint() for m in self.metrics]}

    def check_model(self):
        notes = [note for note in (m.check() for m in self.metrics) if note]
        return "; ".join(notes) or None

    def usage(self) -> dict:
        return {f"{m.name} {name}": value for m in self.metrics for name, value in m.usage().items()}

    def use_device(self, device: str) -> None:
        for metric in self.metrics:
            metric.use_device(device)

    def close(self) -> None:
        for metric in self.metrics:
            metric.close()

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        """Per row, one ``{metric name: values}`` dict per edited image; a metric's failure on any of a row's
        images is that row's error (naming the metric and the image)."""
        items = [(row, k, ScoreItem(f"{request.key}/{k}", tuple(request.images), request.instruction, edited))
                 for row, request in enumerate(requests) for k, edited in enumerate(request.edited)]
        scores = [[{} for _ in request.edited] for request in requests]
        errors: list[list[str]] = [[] for _ in requests]
        for metric in self.metrics:
            for (row, k, _), result in zip(items, self._score(metric, [item for _, _, item in items])):
                if result.error:
                    errors[row].append(f"{metric.name} on edited image {k}: {result.error}")
                else:
                    scores[row][k][metric.name] = result.values
        return [EditResult(error="; ".join(problems)) if problems else EditResult(values=values)
                for values, problems in zip(scores, errors)]

    @staticmethod
    def _score(metric: Metric, items: list[ScoreItem]) -> list[ScoreResult]:
        """``metric.score`` over ``items`` in the metric's own batch size."""
        results: list[ScoreResult] = []
        size = max(1, metric.batch_size)
        for start in range(0, len(items), size):
            batch = items[start:start + size]
            scored = metric.score(batch)
            if len(scored) != len(batch):
                raise RuntimeError(f"metric {metric.name} returned {len(scored)} results for {len(batch)} images")
            results += scored
        return results
