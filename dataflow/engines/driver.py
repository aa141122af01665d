"""The driver side of every engine: resume, plan, checkpoint, progress, interrupts, summary.

An engine only supplies an *executor*: ``execute(batches, on_record, should_stop)`` edits the batches somewhere
(this process, one process per GPU, Ray actors) and hands each finished row's record to ``on_record`` in the
driver's thread. The driver alone writes the checkpoint, so every engine gets the same exactly-once and resume
guarantees.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Callable, Optional, Sequence

from tqdm.auto import tqdm

from dataflow.core.errors import RowError, RunInterrupted
from dataflow.engines.interrupts import InterruptGuard
from dataflow.engines.job import EditJob
from dataflow.engines.summary import RunSummary
from dataflow.engines.tasks import RowTask, group_batches, parse_row, unique_row_keys
from dataflow.engines.worker import make_record
from dataflow.utils.checkpoint import Checkpoint

Executor = Callable[[list, Callable[[dict], None], Callable[[], bool]], None]


def drive(job: EditJob, execute: Executor, show_progress: Optional[bool] = None) -> tuple[list[dict], RunSummary]:
    """Edit every unfinished row of ``job`` with ``execute``; return the output rows and a summary.

    Rows finished by an earlier run with the same fingerprint are reused with their files untouched. Bad rows
    become error rows. Progress is checkpointed every ``job.save_interval`` rows; on SIGINT/SIGTERM the batches
    in flight finish, the checkpoint is flushed and ``RunInterrupted`` is raised.
    """
    started = time.monotonic()
    checkpoint = Checkpoint(job.progress_file, job.serving.fingerprint(), job.save_interval)
    keys = unique_row_keys(job.rows, job.image_key, job.conversation_key)
    records = reusable_records(checkpoint.load(), keys)
    reused = len(records)
    counts = {"generated": 0}
    bar = tqdm(total=len(job.rows), initial=reused, unit="row", desc="editing",
               disable=None if show_progress is None else not show_progress)

    def on_record(record: dict) -> None:
        if record["index"] in records and not records[record["index"]]["error"]:
            return  # a retried batch delivered this row twice: keep the first result
        records[record["index"]] = record
        counts["generated"] += record["error"] is None
        checkpoint.add(record)
        bar.update(1)

    try:
        with InterruptGuard() as guard:
            tasks = plan_tasks(job, keys, records, on_record)
            execute(group_batches(tasks, job.serving.batch_size), on_record, lambda: guard.signum is not None)
            if guard.signum is not None and len(records) < len(job.rows):
                raise RunInterrupted(
                    guard.signum,
                    f"interrupted; finished rows are saved in {job.progress_file}. "
                    "Run the same command again to resume.",
                )
    finally:
        checkpoint.close()
        bar.close()
    failed = sum(1 for r in records.values() if r["error"])
    summary = RunSummary(len(job.rows), counts["generated"], reused, failed, time.monotonic() - started)
    return job.output_rows(records), summary


def reusable_records(previous: dict[str, dict], keys: Sequence[str]) -> dict[int, dict]:
    """Earlier results, by current row index, for rows that succeeded and whose images are all still on disk."""
    records = {}
    for index, key in enumerate(keys):
        old = previous.get(key)
        if old and not old.get("error") and old.get("output") and all(os.path.isfile(p) for p in old["output"]):
            records[index] = make_record(index, key, output=old["output"])
    return records


def plan_tasks(job: EditJob, keys: Sequence[str], done: dict[int, dict], on_error) -> list[RowTask]:
    """Tasks for the rows not done yet; rows that cannot be planned go to ``on_error`` as error records."""
    owned = {p for record in done.values() for p in record["output"]}
    tasks = []
    for index, key in enumerate(keys):
        if index in done:
            continue
        try:
            tasks.append(plan_task(job, index, key, owned))
        except RowError as exc:
            on_error(make_record(index, key, error=str(exc)))
    return tasks


def plan_task(job: EditJob, index: int, key: str, owned: set) -> RowTask:
    """Parse the row and read its image header to find its bucket; ``RowError`` if the row is unusable."""
    task = parse_row(job.rows[index], index, key, job.image_key, job.conversation_key, job.base_dir)
    width, height = job.image_io.probe(task.image_path)
    task.bucket = job.serving.bucket_key(width, height)
    task.suffix = free_suffix(job, task, owned)
    return task


def free_suffix(job: EditJob, task: RowTask, owned: set) -> str:
    """'' unless the row's default file names belong to another row reused from an earlier run."""
    if not any(job.image_io.output_path(task.index, k) in owned for k in range(job.serving.num_images_per_request)):
        return ""
    return "-" + hashlib.sha256(task.key.encode()).hexdigest()[:8]
