"""``ImageEditEvaluator``: score every edited image of a step against its source and instruction."""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

from dataflow.core.errors import InputError
from dataflow.core.operator import OperatorABC
from dataflow.core.validation import check_positive_int
from dataflow.engines.job import EditJob
from dataflow.engines.local import LocalEngine
from dataflow.engines.summary import RunSummary
from dataflow.io.atomic import ensure_writable_folder
from dataflow.io.image_io import ImageIO
from dataflow.io.lock import output_locks
from dataflow.logger import get_logger
from dataflow.operators.core_vision.eval.metric import Metric
from dataflow.operators.core_vision.eval.metrics import make_metric
from dataflow.operators.core_vision.eval.metrics_serving import MetricsServing
from dataflow.utils.checkpoint import progress_path
from dataflow.utils.storage import FileStorage

logger = get_logger()


class ImageEditEvaluator(OperatorABC):
    """Add ``scores`` to each row: one dict per edited image (aligned with ``output_image``), keyed by metric.

    ``scores[k]`` holds, for the k-th edited image, e.g. ``{"change": {"changed_fraction", "ssim", "no_change"},
    "clip": {"clip_i", "clip_t"}, "dino": {"dino"}, "judge": {"sc", "pq", "overall", "reason"}}``. A row whose
    scoring failed gets ``scores: []`` and ``scores_error`` (named after ``output_score_key``); a row without edited
    images gets ``scores: []``. Scoring resumes like generation: rows scored by an earlier run with the same
    metrics are not scored again.

    Args:
        metrics: metric names ("change", "clip", "dino", "judge") or ``Metric`` instances.
        metric_options: per metric name, keyword arguments for it (e.g. ``{"clip": {"model": "./clip"}}``).
        batch_size: rows per scoring call.
        save_interval: scored rows per durable checkpoint.
        edited_dir: folder that relative edited image paths are resolved against; default the working directory
            (where the generating run wrote them).
        source_dir: folder that relative source image paths are resolved against; default the storage's input
            file's folder (right within one pipeline, whose first step read the source rows).
        engine: ``LocalEngine()`` (default) or ``MultiProcessEngine(devices)`` (one process per GPU).
    """

    def __init__(self, metrics: Sequence[Union[str, Metric]] = ("change",), metric_options: Optional[dict] = None,
                 batch_size: int = 8, save_interval: int = 10, edited_dir: Optional[str] = None,
                 source_dir: Optional[str] = None, engine: Any = None):
        check_positive_int(batch_size=batch_size, save_interval=save_interval)
        options = dict(metric_options or {})
        unknown = set(options) - {m for m in metrics if isinstance(m, str)}
        if unknown:
            raise InputError(f"metric_options names metrics not asked for: {', '.join(sorted(unknown))}")
        built = [m if isinstance(m, Metric) else make_metric(m, **options.get(m, {})) for m in metrics]
        self.serving = MetricsServing(built, batch_size=batch_size)
        self.save_interval = save_interval
        self.edited_dir = edited_dir
        self.source_dir = source_dir
        if type(engine).__name__ == "RayEngine":  # its records travel as Arrow tables of output paths
            raise InputError("scoring runs on the local engine or a MultiProcessEngine, not on Ray yet")
        self.engine = engine or LocalEngine()

    @staticmethod
    def get_desc(lang: str = "en") -> str:
        return "Score each edited image against its source image and instruction."

    def build_job(self, storage: FileStorage, input_image_key: str = "images",
                  input_conversation_key: str = "conversations", input_edited_key: str = "output_image",
                  output_score_key: str = "scores") -> EditJob:
        """The scoring job on ``storage``'s current step; its rows stream from the step's file."""
        if not output_score_key:
            raise InputError("output_score_key must be a non-empty field name")
        return EditJob(
            rows=storage.stream(),
            serving=self.serving,
            image_io=ImageIO(save_path=storage.cache_path),
            base_dir=self.source_dir or storage.input_dir,
            progress_file=progress_path(storage.write_path),
            image_key=input_image_key,
            conversation_key=input_conversation_key,
            output_key=output_score_key,
            save_interval=self.save_interval,
            edited_key=input_edited_key,
            edited_dir=self.edited_dir,
        )

    def run(self, storage: FileStorage, input_image_key: str = "images",
            input_conversation_key: str = "conversations", input_edited_key: str = "output_image",
            output_score_key: str = "scores", show_progress: Optional[bool] = None) -> RunSummary:
        """Score the current step's rows and write the next step file; return a summary of the run."""
        job = self.build_job(storage, input_image_key, input_conversation_key, input_edited_key, output_score_key)
        ensure_writable_folder(os.path.dirname(os.path.abspath(storage.write_path)), "cache folder")
        with output_locks(job.output_folders()):  # the scores and the step file: one span, no gap for a second run
            rows, summary = self.engine.run(job, show_progress=show_progress)
            summary.output_path = storage.write(rows)
        logger.info("%s", summary.describe())
        return summary
