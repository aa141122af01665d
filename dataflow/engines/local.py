"""Run an edit job in this process: plan, batch by resolution, edit, save, checkpoint."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Optional, Sequence

from tqdm.auto import tqdm

from dataflow.core.errors import RowError, RunInterrupted, is_out_of_memory
from dataflow.core.request import EditRequest, EditResult
from dataflow.core.serving import ImageEditServing
from dataflow.engines.interrupts import InterruptGuard
from dataflow.engines.job import EditJob
from dataflow.engines.summary import RunSummary
from dataflow.engines.tasks import RowTask, group_batches, parse_row, unique_row_keys
from dataflow.logger import get_logger
from dataflow.utils.checkpoint import Checkpoint

logger = get_logger()

OOM_MESSAGE = "out of accelerator memory even for a single row; lower the output size or use a larger GPU"


def run_local(job: EditJob, show_progress: Optional[bool] = None) -> tuple[list[dict], RunSummary]:
    """Edit every unfinished row of ``job``; return the output rows and a summary.

    Rows finished by an earlier run with the same fingerprint are reused with their files untouched. Bad rows
    become error rows. Progress is checkpointed every ``job.save_interval`` rows; on SIGINT/SIGTERM the current
    batch finishes, the checkpoint is flushed and ``RunInterrupted`` is raised.
    """
    started = time.monotonic()
    checkpoint = Checkpoint(job.progress_file, job.serving.fingerprint(), job.save_interval)
    keys = unique_row_keys(job.rows, job.image_key, job.conversation_key)
    records = reusable_records(checkpoint.load(), keys)
    reused = len(records)
    owned_paths = {p for r in records.values() for p in r["output"]}
    generated = 0
    bar = tqdm(total=len(job.rows), initial=reused, unit="row", desc="editing", disable=_bar_disabled(show_progress))
    try:
        with InterruptGuard() as guard:
            tasks = []
            for index, key in enumerate(keys):
                if index in records:
                    continue
                try:
                    tasks.append(plan_task(job, index, key))
                except RowError as exc:
                    _finish(checkpoint, records, bar, _record(index, key, error=str(exc)))
            for batch in group_batches(tasks, job.serving.batch_size):
                if guard.signum is not None:
                    raise _interrupted(guard.signum, job)
                for record in run_batch(job, batch, owned_paths):
                    generated += record["error"] is None
                    _finish(checkpoint, records, bar, record)
            if guard.signum is not None and len(records) < len(job.rows):
                raise _interrupted(guard.signum, job)
    finally:
        checkpoint.close()
        bar.close()
    failed = sum(1 for r in records.values() if r["error"])
    summary = RunSummary(len(job.rows), generated, reused, failed, time.monotonic() - started)
    return job.output_rows(records), summary


def reusable_records(previous: dict[str, dict], keys: Sequence[str]) -> dict[int, dict]:
    """Earlier results, by current row index, for rows that succeeded and whose images are all still on disk."""
    records = {}
    for index, key in enumerate(keys):
        old = previous.get(key)
        if old and not old.get("error") and old.get("output") and all(os.path.isfile(p) for p in old["output"]):
            records[index] = _record(index, key, output=old["output"])
    return records


def plan_task(job: EditJob, index: int, key: str) -> RowTask:
    """Parse the row and read its image header to find its bucket; ``RowError`` if the row is unusable."""
    task = parse_row(job.rows[index], index, key, job.image_key, job.conversation_key, job.base_dir)
    width, height = job.image_io.probe(task.image_path)
    task.bucket = job.serving.bucket_key(width, height)
    return task


def run_batch(job: EditJob, batch: Sequence[RowTask], owned_paths: set) -> list[dict]:
    """Decode, edit and save one batch; every task comes back as a record, failed or not."""
    records, requests, live = [], [], []
    for task in batch:
        try:
            image = job.image_io.read(task.image_path)
        except RowError as exc:
            records.append(_record(task.index, task.key, error=str(exc)))
            continue
        requests.append(EditRequest(task.key, image, task.instruction, job.serving.num_images_per_request))
        live.append(task)
    for task, result in zip(live, edit_splitting_on_oom(job.serving, requests)):
        if result.error:
            records.append(_record(task.index, task.key, error=result.error))
            continue
        suffix = _free_suffix(job, task, len(result.images), owned_paths)
        records.append(_record(task.index, task.key, output=job.image_io.write(task.index, result.images, suffix)))
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


def _free_suffix(job: EditJob, task: RowTask, count: int, owned_paths: set) -> str:
    """'' unless the row's default file names belong to another row reused from an earlier run."""
    if not any(job.image_io.output_path(task.index, k) in owned_paths for k in range(count)):
        return ""
    return "-" + hashlib.sha256(task.key.encode()).hexdigest()[:8]


def _record(index: int, key: str, output: Sequence[str] = (), error: Optional[str] = None) -> dict:
    return {"key": key, "index": index, "output": list(output), "error": error}


def _finish(checkpoint: Checkpoint, records: dict, bar, record: dict) -> None:
    records[record["index"]] = record
    checkpoint.add(record)
    bar.update(1)


def _interrupted(signum: int, job: EditJob) -> RunInterrupted:
    return RunInterrupted(
        signum,
        f"interrupted; finished rows are saved in {job.progress_file}. Run the same command again to resume.",
    )


def _bar_disabled(show_progress: Optional[bool]) -> Optional[bool]:
    return None if show_progress is None else not show_progress
