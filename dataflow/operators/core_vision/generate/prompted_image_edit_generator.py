"""``PromptedImageEditGenerator``: edit every row's image as its conversation's last user message says."""

from __future__ import annotations

import os
from typing import Any, Optional

from dataflow.core.columns import check_columns
from dataflow.core.errors import InputError
from dataflow.core.operator import OperatorABC
from dataflow.core.serving import ImageEditServing
from dataflow.core.validation import check_positive_int
from dataflow.engines.job import EditJob
from dataflow.engines.local import LocalEngine
from dataflow.engines.summary import RunSummary
from dataflow.io.atomic import ensure_writable_folder
from dataflow.io.image_io import ImageIO
from dataflow.logger import get_logger
from dataflow.utils.checkpoint import progress_path
from dataflow.utils.storage import FileStorage

logger = get_logger()


class PromptedImageEditGenerator(OperatorABC):
    """Edit images by instruction and record the output paths in a new column.

    Args:
        image_edit_serving: the editing backend (``LocalImageGenServing``, ``ClassicEditServing``, ...). Its
            ``image_io`` decides where images are saved; without one they go to ``{cache_path}/images``.
        save_interval: finished rows per durable checkpoint; a crash loses at most this many rows plus one batch.
        engine: where the edits run: ``LocalEngine()`` (default, this process), ``MultiProcessEngine(devices)``
            (one process per GPU) or ``RayEngine(address=...)`` (a Ray cluster), all from ``dataflow.engines``.
    """

    def __init__(self, image_edit_serving: ImageEditServing, save_interval: int = 10, engine: Any = None):
        if not isinstance(image_edit_serving, ImageEditServing):
            raise InputError(
                f"image_edit_serving must be an editing serving, got {type(image_edit_serving).__name__}"
            )
        check_positive_int(save_interval=save_interval)
        self.serving = image_edit_serving
        self.save_interval = save_interval
        self.engine = engine or LocalEngine()

    @staticmethod
    def get_desc(lang: str = "en") -> str:
        return "Edit each row's image according to the last user message of its conversation."

    def build_job(
        self,
        storage: FileStorage,
        input_image_key: str = "images",
        input_conversation_key: str = "conversations",
        output_image_key: str = "output_image",
    ) -> EditJob:
        """The job this operator would run on ``storage``'s current step; its rows stream from the step's file."""
        if not output_image_key:
            raise InputError("output_image_key must be a non-empty field name")
        check_columns(storage.stream(), {"image": input_image_key, "conversation": input_conversation_key},
                      storage.read_path)
        image_io = self.serving.image_io or ImageIO(save_path=os.path.join(storage.cache_path, "images"))
        return EditJob(
            rows=storage.stream(),
            serving=self.serving,
            image_io=image_io,
            base_dir=storage.input_dir,
            progress_file=progress_path(storage.write_path),
            image_key=input_image_key,
            conversation_key=input_conversation_key,
            output_key=output_image_key,
            save_interval=self.save_interval,
        )

    def run(
        self,
        storage: FileStorage,
        input_image_key: str = "images",
        input_conversation_key: str = "conversations",
        output_image_key: str = "output_image",
        show_progress: Optional[bool] = None,
    ) -> RunSummary:
        """Edit the current step's rows and write the next step file; return a summary of the run.

        Bad rows do not stop the run: they get ``output_image: []`` and ``output_image_error`` (named after
        ``output_image_key``). Exceptions are raised only for failures of the run itself, after everything
        finished so far is checkpointed; rerunning resumes.
        """
        job = self.build_job(storage, input_image_key, input_conversation_key, output_image_key)
        ensure_writable_folder(os.path.dirname(os.path.abspath(storage.write_path)), "cache folder")
        ensure_writable_folder(job.image_io.save_path, "image folder")
        rows, summary = self.engine.run(job, show_progress=show_progress)
        summary.output_path = storage.write(rows)
        logger.info("%s", summary.describe())
        return summary
