"""The part of a run that needs the model: decode a batch, edit it, save the images.

A ``BatchWorker`` lives wherever the model is: in the driver's process, in one process per GPU, or in a Ray
actor. It returns one record per row and never writes the checkpoint; the driver does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from dataflow.core.errors import RowError, is_out_of_memory
from dataflow.core.request import EditRequest, EditResult
from dataflow.core.serving import ImageEditServing
from dataflow.engines.records import make_record
from dataflow.engines.tasks import RowTask
from dataflow.io.image_io import ImageIO
from dataflow.logger import get_logger

logger = get_logger()

OOM_MESSAGE = "out of accelerator memory even for a single row; lower the output size or use a larger GPU"


@dataclass
class Decoded:
    """A batch between its stages: decoded requests, then their results; rows that failed on the way."""

    tasks: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    results: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    warnings: list = field(default_factory=list)  # decoder warnings per task, counted into its record


class BatchWorker:
    """Edits batches of planned rows with one serving and saves the results with one ``ImageIO``."""

    def __init__(self, serving: ImageEditServing, image_io: ImageIO):
        self.serving = serving
        self.image_io = image_io

    def run(self, batch: Sequence[RowTask]) -> list[dict]:
        """Decode, edit and save one batch; every task comes back as a record, failed or not."""
        return self.save(self.edit(self.decode(batch)))

    def decode(self, batch: Sequence[RowTask]) -> Decoded:
        """Read the batch's images (CPU work that can overlap the previous batch's GPU work)."""
        decoded = Decoded()
        for task in batch:
            warnings = list(task.warnings)
            try:
                images = self.image_io.read(task.image_paths, warnings=warnings)
                edited = self.image_io.read(task.edited_paths, warnings=warnings)
                files = [self.image_io.read_bytes(p) for p in task.image_paths] \
                    if self.serving.wants_source_files else []
            except RowError as exc:
                decoded.failed.append(make_record(task.index, task.key, error=str(exc), warnings=len(warnings)))
                continue
            decoded.requests.append(EditRequest(task.key, images[0], task.instruction,
                                                self.serving.num_images_per_request, more_images=tuple(images[1:]),
                                                edited=tuple(edited), files=tuple(files),
                                                earlier_turns=tuple(task.earlier_turns)))
            decoded.tasks.append(task)
            decoded.warnings.append(len(warnings))
        return decoded

    def edit(self, decoded: Decoded) -> Decoded:
        """Run the serving on the decoded requests (the accelerator's part)."""
        decoded.results = edit_splitting_on_oom(self.serving, decoded.requests)
        decoded.requests = []  # the input images are no longer needed
        return decoded

    def save(self, edited: Decoded) -> list[dict]:
        """Write the edited images (PNG encoding: CPU work again); return the batch's records."""
        records = list(edited.failed)
        for task, result, warnings in zip(edited.tasks, edited.results, edited.warnings):
            if result.error:
                records.append(make_record(task.index, task.key, error=result.error, warnings=warnings,
                                           final=result.final))
            elif result.values is not None:  # a scorer's values: nothing to write
                records.append(make_record(task.index, task.key, output=result.values, warnings=warnings))
            else:
                paths = self.image_io.write(task.index, result.images, task.suffix)
                records.append(make_record(task.index, task.key, output=paths, warnings=warnings))
        return records


def edit_splitting_on_oom(serving: ImageEditServing, requests: list[EditRequest]) -> list[EditResult]:
    """``serving.edit``, halving the batch on out-of-memory down to single rows, which then fail alone."""
    if not requests:
        return []
    try:
        results = serving.edit(requests)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        serving.release_memory()
        if len(requests) == 1:
            logger.warning("row %s: %s", requests[0].key, OOM_MESSAGE)
            return [EditResult(error=OOM_MESSAGE)]
        logger.warning("out of memory on a batch of %d rows; retrying in halves", len(requests))
        middle = len(requests) // 2
        return edit_splitting_on_oom(serving, requests[:middle]) + edit_splitting_on_oom(serving, requests[middle:])
    if len(results) != len(requests):
        raise RuntimeError(f"{type(serving).__name__}.edit returned {len(results)} results for {len(requests)} rows")
    return results
