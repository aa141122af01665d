"""Streaming planning: rows are read, matched against earlier results, probed and bucketed while batches run.

Image headers are read by a bounded thread pool (on a network filesystem a header read costs milliseconds), a
bounded number of rows ahead of the batches handed out, so the first batch starts as soon as its rows are probed
and memory does not grow with the input.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator, Union

from dataflow.core import rows as row_fields
from dataflow.core.errors import RowError
from dataflow.engines.job import EditJob
from dataflow.engines.records import make_record
from dataflow.engines.tasks import Bucketer, RowKeys, RowTask, bucket_of, check_image_count, parse_row

PROBE_THREADS = 8
CHUNK = 16  # rows per task of the pool: fewer hand-overs between threads than one task a row
CHUNKS_AHEAD_PER_THREAD = 2  # chunks submitted to the pool ahead of the one being bucketed
WINDOW_BATCHES = 32  # partial buckets may hold this many batches' worth of rows before the fullest leaves

Planned = Union[list, dict]  # a batch of RowTasks, or a finished row's record (reused or failed)


class Planner:
    """Iterate to get, in input order as far as buckets allow, batches to edit and records of rows already done.

    A record with ``"reused": True`` is an earlier run's result whose files are all still on disk, or its final
    error; any other record is a row that cannot be edited (its error says why). After a complete pass,
    ``total`` is the number of rows.

    Args:
        job: the rows, the serving (batch size, buckets, image limit) and where outputs go.
        previous: output paths (or final errors) of rows an earlier run settled, by key (``Checkpoint.finished``).
    """

    def __init__(self, job: EditJob, previous: dict[str, Union[tuple, str]], threads: int = PROBE_THREADS):
        self.job = job
        self.previous = previous
        self.owner = ({path: key for key, paths in previous.items() if isinstance(paths, tuple) for path in paths}
                      if job.writes_files else {})
        self.threads = threads
        self.total = 0
        self.finished = False

    def __iter__(self) -> Iterator[Planned]:
        serving = self.job.serving
        bucketer = Bucketer(serving.batch_size, window=WINDOW_BATCHES * serving.batch_size)
        keys = RowKeys(self.job.image_key, self.job.conversation_key)
        ahead: deque[Future] = deque()
        pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="dataflow-probe")
        try:
            chunk: list = []
            for index, row in enumerate(self.job.iter_rows()):
                chunk.append((index, keys.next(row), row))
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
        done = self.previous.get(key)
        if isinstance(done, str):  # a final error (a refusal): asking again would cost and fail the same way
            return dict(make_record(index, key, error=done, final=True), reused=True)
        job = self.job
        if done and (not job.writes_files or all(os.path.isfile(p) for p in done)):
            return dict(make_record(index, key, output=done), reused=True)
        try:
            task = parse_row(row, index, key, job.image_key, job.conversation_key, job.base_dir,
                             turns=job.serving.wants_earlier_turns)
            if not job.writes_files:
                return self.scoring_task(task, row)
            check_image_count(task, job.serving)
            sizes = [job.image_io.probe(path, warnings=task.warnings) for path in task.image_paths]
        except RowError as exc:
            return make_record(index, key, error=str(exc))
        task.bucket = bucket_of(job.serving.bucket_key(*sizes[0]), sizes)
        task.suffix = self.free_suffix(task)
        return task

    def scoring_task(self, task: RowTask, row: dict) -> Union[RowTask, dict]:
        """The task of a row whose edits are scored; a row without edited images is done at once (no scores)."""
        task.edited_paths = row_fields.edited_paths(row, self.job.edited_key, self.job.edited_dir or os.getcwd())
        return task if task.edited_paths else make_record(task.index, task.key, output=[])

    def free_suffix(self, task: RowTask) -> str:
        """'' unless the row's default file names belong to another row's results from an earlier run."""
        names = (self.job.image_io.output_path(task.index, k) for k in range(self.job.serving.num_images_per_request))
        if all(self.owner.get(name, task.key) == task.key for name in names):
            return ""
        return "-" + hashlib.sha256(task.key.encode()).hexdigest()[:8]
