"""The metrics ``ImageEditEvaluator`` can compute: change, clip, dino, judge, editscore (an edit reward); ``make_metric`` builds one by name.

Each is a ``Metric`` (see ``..metric``) built from plain keyword arguments; models load on the first ``score``.
The modules import torch, transformers and httpx only when a metric needs them.
"""

from __future__ import annotations

import inspect
from typing import Any

from dataflow.core.errors import InputError
from dataflow.operators.core_vision.eval.metric import Metric

METRICS = ("change", "clip", "dino", "judge", "editscore")


def metric_class(name: str, options: dict) -> type:
    """The class ``make_metric`` builds for ``name`` with these options."""
    if name == "change":
        from dataflow.operators.core_vision.eval.metrics.change import ChangeMetric as cls
    elif name == "clip":
        from dataflow.operators.core_vision.eval.metrics.clip import CLIPMetric as cls
    elif name == "dino":
        from dataflow.operators.core_vision.eval.metrics.dino import DINOMetric as cls
    elif name == "judge" and options.get("api_url"):
        from dataflow.operators.core_vision.eval.metrics.api_judge import APIJudge as cls
    elif name == "judge":
        from dataflow.operators.core_vision.eval.metrics.local_judge import LocalJudge as cls
    elif name == "editscore":
        from dataflow.operators.core_vision.eval.metrics.editscore import EditScoreMetric as cls
    else:
        raise InputError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}")
    return cls


def make_metric(name: str, **options: Any) -> Metric:
    """A metric by name: "change", "clip", "dino", "judge" (an ``APIJudge`` when ``api_url`` is given, else a
    ``LocalJudge`` of ``model``), or "editscore" (``EditScoreMetric``: a VLM reward, ``model`` plus ``lora``). ``options`` are the class's keyword arguments; an unknown one is an
    ``InputError`` naming the arguments the class takes."""
    cls = metric_class(name, options)
    if name == "judge" and "api_url" in options and not options["api_url"]:
        options = {k: v for k, v in options.items() if k != "api_url"}  # an empty URL means "no API"
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as exc:
        taken = [p for p in inspect.signature(cls).parameters if p != "self"]
        raise InputError(f"metric {name!r} ({cls.__name__}): {exc}; it takes {', '.join(taken)}") from None
    return cls(**options)


__all__ = ["METRICS", "make_metric", "metric_class"]
