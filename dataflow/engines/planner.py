"""Streaming planning: rows are read, matched against earlier results, probed and bucketed while batches run.

Image headers are read by a bounded thread pool (on a network filesystem a header read costs milliseconds), a
bounded number of rows ahead of the batches handed out, so the first batch starts as soon as its rows are probed
and memory does not grow with the input.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator, Optional, Union

from dataflow.core import rows as row_fields
from dataflow.core.errors import RowError
from dataflow.engines.job import EditJob
from dataflow.engines.records import make_record
from dataflow.engines.tasks import (Bucketer, RowKeys, RowTask, bucket_of, check_image_count,
                                    check_instruction_length, image_identity, parse_row, row_digest, row_signature)
from dataflow.io.image_io import png_file_is_whole
from dataflow.utils.checkpoint import Settled

PROBE_THREADS = 8
CHUNK = 16  # rows per task of the pool: fewer hand-overs between threads than one task a row
CHUNKS_AHEAD_PER_THREAD = 2  # chunks submitted to the pool ahead of the one being bucketed
IDENTITY_CACHE = 65536  # image paths whose identity (size, mtime) a planner remembers
WINDOW_BATCHES = 32  # partial buckets may hold this many batches' worth of rows before the fullest leaves

Planned = Union[list, dict]  # a batch of RowTasks, or a finished row's record (reused or failed)


class Planner:
    """Iterate to get, in input order as far as buckets allow, batches to edit and records of rows already done.

    A record with ``"reused": True`` is an earlier run's result for the same instruction and images whose files
    are all still whole on disk, or its final error; any other record is a row that cannot be edited (its error
    says why). After a complete pass, ``total`` is the number of rows and ``planned_rows`` holds each row's
    ``row_digest``.

    Args:
        job: the rows, the serving (batch size, buckets, image limit) and where outputs go.
        previous: (output paths or final error, signature) of the rows an earlier run settled, by key
            (``Checkpoint.finished``).
    """

    def __init__(self, job: EditJob, previous: dict[str, Settled], threads: int = PROBE_THREADS):
        self.job = job
        self.previous = previous
        self.owner = ({path: key for key, (outcome, _) in previous.items() if isinstance(outcome, tuple)
                       for path in outcome} if job.writes_files else {})
        self.threads = threads
        self.total = 0
        self.finished = False
        self._identities: dict[str, list] = {}
        self.planned_rows = array("q")  # row_digest of each row, by index: the output is paired with rows by it

    def __iter__(self) -> Iterator[Planned]:
        serving = self.job.serving
        bucketer = Bucketer(serving.batch_size, window=WINDOW_BATCHES * serving.batch_size)
        keys = RowKeys(self.job.image_key, self.job.conversation_key)
        ahead: deque[Future] = deque()
        pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="dataflow-probe")
        try:
            chunk: list = []
            for index, row in enumerate(self.job.iter_rows()):
                key = keys.next(row)
                self.planned_rows.append(row_digest(key, row, keys.image_key, keys.conversation_key))
                chunk.append((index, key, row))
                self.total = index + 1
                if len(chunk) == CHUNK:
                    ahead.append(pool.submit(self.plan_rows, chunk))
                    chunk = []
                if len(ahead) > self.threads * CHUNKS_AHEAD_PER_THREAD:
                    yield from self._place(ahead.popleft().result(), bucketer)
            if chunk:
                ahead.append(pool.submit(self.plan_rows, chunk))
            while ahead:
                yield from self._place(ahead.popleft().result(), bucketer)
            yield from bucketer.flush()
            self.finished = True
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _place(planned: list, bucketer: Bucketer) -> Iterator[Planned]:
        for item in planned:
            if isinstance(item, dict):
                yield item
            else:
                yield from bucketer.add(item)

    def plan_rows(self, chunk: list) -> list:
        """``plan_row`` for each (index, key, row) of ``chunk``."""
        return [self.plan_row(*item) for item in chunk]

    def plan_row(self, index: int, key: str, row: dict) -> Union[RowTask, dict]:
        """The row's task, the earlier result to reuse, or an error record (runs in the probe pool)."""
        job = self.job
        try:
            task = parse_row(row, index, key, job.image_key, job.conversation_key, job.base_dir,
                             turns=job.serving.wants_earlier_turns)
            if not job.writes_files:
                task.edited_paths = row_fields.edited_paths(row, job.edited_key, job.edited_dir or os.getcwd())
            task.signature = row_signature(task, self.image_identity)
        except RowError as exc:
            return make_record(index, key, error=str(exc))
        done = self.previous.get(key)
        if done is not None:
            task.redo = self.redo_reason(task, *done)
            if not task.redo:
                return self.reused(task, done[0])
        if not job.writes_files:  # a scoring job: a row without edited images is done at once (no scores)
            return task if task.edited_paths else make_record(index, key, output=[])
        try:
            check_image_count(task, job.serving)
            check_instruction_length(task, job.serving)
            sizes = [job.image_io.probe(path, warnings=task.warnings) for path in task.image_paths]
        except RowError as exc:
            return make_record(index, key, error=str(exc))
        task.bucket = bucket_of(job.serving.bucket_key(*sizes[0]), sizes)
        task.suffix = self.free_suffix(task)
        return task

    def image_identity(self, path: str) -> list:
        """``tasks.image_identity``, each path's stat taken once per run (rows often share an image); the cache
        is emptied when it reaches ``IDENTITY_CACHE`` paths, so memory stays bounded."""
        known = self._identities.get(path)
        if known is None:
            if len(self._identities) >= IDENTITY_CACHE:
                self._identities.clear()
            known = self._identities[path] = image_identity(path)
        return known

    def redo_reason(self, task: RowTask, outcome: Union[tuple, str], signature: Optional[int]) -> str:
        """Why the earlier result of ``task``'s row is not reused: "changed" (its instruction or an image is not
        what it was: ``row_signature``), "damaged" (an output image is missing or cut short), or "" (reuse it).

        A record without a signature (written before signatures were kept) is trusted as before.
        """
        if signature is not None and signature != task.signature:
            return "changed"
        if isinstance(outcome, str) or not self.job.writes_files:
            return ""
        return "" if all(png_file_is_whole(path) for path in outcome) else "damaged"

    @staticmethod
    def reused(task: RowTask, outcome: Union[tuple, str]) -> dict:
        """The record of an earlier result: its images, or its final error (a refusal: asking again would cost
        and fail the same way)."""
        if isinstance(outcome, str):
            return dict(make_record(task.index, task.key, error=outcome, final=True), reused=True)
        return dict(make_record(task.index, task.key, output=outcome), reused=True)

    def free_suffix(self, task: RowTask) -> str:
        """'' unless the row's default file names belong to another row's results from an earlier run."""
        names = (self.job.image_io.output_path(task.index, k) for k in range(self.job.serving.num_images_per_request))
        if all(self.owner.get(name, task.key) == task.key for name in names):
            return ""
        return "-" + hashlib.sha256(task.key.encode()).hexdigest()[:8]
