"""``PromptedImageEditGenerator``: edit every row's image as its conversation's last user message says.

With ``candidates=N`` it makes N edits of every row, each with its own seed (see ``dataflow.core.seeding``), for a
later step to rank (``ImageEditSelector``). The serving is wrapped in ``CandidateServing``, which asks it for N
images per row and adds ``candidates`` to its fingerprint, so a rerun resumes the same job and a rerun with another
N is refused instead of mixing counts.
"""

from __future__ import annotations

import os
from typing import Any, Hashable, Iterable, Iterator, Optional, Sequence, Union

from dataflow.core.columns import check_columns
from dataflow.core.errors import InputError
from dataflow.core.operator import OperatorABC
from dataflow.core.request import EditRequest, EditResult
from dataflow.core.serving import ImageEditServing
from dataflow.core.validation import check_positive_int
from dataflow.engines.job import EditJob
from dataflow.engines.local import LocalEngine
from dataflow.engines.summary import RunSummary
from dataflow.io.atomic import ensure_writable_folder
from dataflow.io.image_io import ImageIO
from dataflow.io.lock import output_locks
from dataflow.logger import get_logger
from dataflow.utils.checkpoint import progress_path
from dataflow.utils.storage import FileStorage

logger = get_logger()

CANDIDATES_KEY = "candidates"  # the output rows' mark: their edited images are this many candidates of one edit


class CandidateServing(ImageEditServing):
    """``serving`` asked for ``candidates`` edited images per row; everything else is the wrapped serving's.

    The images differ because every serving seeds output image k of a row from (seed, row key, k), never from the
    batch (``dataflow.core.seeding.image_seed``); a deterministic backend (classic) makes identical candidates.

    Args:
        serving: the editing backend, built for one image per row (or for exactly ``candidates``).
        candidates: edited images per row, at least 1.
    """

    def __init__(self, serving: ImageEditServing, candidates: int):
        check_positive_int(candidates=candidates)
        own = getattr(serving, "num_images_per_request", 1)
        if own not in (1, candidates):
            raise InputError(f"the serving already makes {own} images per row; ask for candidates={candidates} "
                             "with a serving built for one image per row (--images-per-prompt 1)")
        self.serving = serving
        self.num_images_per_request = candidates

    # what engines read of a serving, delegated (properties, so that a change in the wrapped one shows)
    batch_size = property(lambda self: self.serving.batch_size)
    concurrency = property(lambda self: self.serving.concurrency)
    max_input_images = property(lambda self: self.serving.max_input_images)
    image_io = property(lambda self: self.serving.image_io)
    display_name = property(lambda self: self.serving.display_name)

    def fingerprint(self) -> dict:
        return {**self.serving.fingerprint(), CANDIDATES_KEY: self.num_images_per_request}

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        return self.serving.edit(requests)  # each request already asks for ``candidates`` images

    def bucket_key(self, width: int, height: int) -> Hashable:
        return self.serving.bucket_key(width, height)

    def check_instruction(self, instruction: str) -> None:
        self.serving.check_instruction(instruction)

    def check_model(self) -> Optional[str]:
        return self.serving.check_model()

    def usage(self) -> dict:
        return self.serving.usage()

    def use_device(self, device: str) -> None:
        self.serving.use_device(device)

    def release_memory(self) -> None:
        self.serving.release_memory()

    def close(self) -> None:
        self.serving.close()


def marked_candidates(rows: Union[list, Iterable], candidates: int) -> Union[list, Iterator[dict]]:
    """The output rows with ``candidates: N`` (a list stays a list; a stream stays a stream)."""
    marked = (dict(row, **{CANDIDATES_KEY: candidates}) for row in rows)
    return list(marked) if isinstance(rows, list) else marked


class PromptedImageEditGenerator(OperatorABC):
    """Edit images by instruction and record the output paths in a new column.

    Args:
        image_edit_serving: the editing backend (``LocalImageGenServing``, ``ClassicEditServing``, ...). Its
            ``image_io`` decides where images are saved; without one they go to ``{cache_path}/images``.
        save_interval: finished rows per durable checkpoint; a crash loses at most this many rows plus one batch.
        engine: where the edits run: ``LocalEngine()`` (default, this process), ``MultiProcessEngine(devices)``
            (one process per GPU) or ``RayEngine(address=...)`` (a Ray cluster), all from ``dataflow.engines``.
        candidates: make this many edits of every row, each with its own seed, and mark the output rows
            ``candidates: N`` for ``ImageEditSelector`` (best-of-N); None: the serving's own images per row.
    """

    def __init__(self, image_edit_serving: ImageEditServing, save_interval: int = 10, engine: Any = None,
                 candidates: Optional[int] = None):
        if not isinstance(image_edit_serving, ImageEditServing):
            raise InputError(
                f"image_edit_serving must be an editing serving, got {type(image_edit_serving).__name__}"
            )
        check_positive_int(save_interval=save_interval)
        self.serving = image_edit_serving
        self.candidates = candidates
        if candidates is not None:
            self.serving = CandidateServing(image_edit_serving, candidates)
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
        with output_locks(job.output_folders()):  # the edits and the step file: one span, no gap for a second run
            rows, summary = self.engine.run(job, show_progress=show_progress)
            if self.candidates is not None:
                rows = marked_candidates(rows, self.candidates)
            summary.output_path = storage.write(rows)
        logger.info("%s", summary.describe())
        return summary
