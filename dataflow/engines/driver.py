"""The driver side of every engine: resume, plan, checkpoint, progress, interrupts, summary.

An engine only supplies an *executor*: ``execute(batches, on_record, should_stop)`` edits the batches somewhere
(this process, one process per GPU, Ray actors) and hands each finished row's record to ``on_record`` in the
driver's thread. ``batches`` is an iterator: planning streams (see ``planner.py``), so an engine pulls the next
batch when it has room for it and must exhaust the iterator unless ``should_stop()`` says to stop. The driver
alone writes the checkpoint, so every engine gets the same exactly-once and resume guarantees.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator, Optional, Union

from tqdm.auto import tqdm

from dataflow.core.errors import RunInterrupted
from dataflow.engines.interrupts import InterruptGuard
from dataflow.engines.job import EditJob
from dataflow.engines.planner import Planner
from dataflow.engines.records import RecordStore
from dataflow.engines.summary import RunSummary
from dataflow.io.lock import output_locks
from dataflow.logger import get_logger
from dataflow.utils.checkpoint import Checkpoint

logger = get_logger()

LOG_EVERY_S = 30.0  # a progress line this often when stderr is not a terminal (see ``Progress``)

Executor = Callable[[Iterator[list], Callable[[dict], None], Callable[[], bool]], None]


def drive(job: EditJob, execute: Executor, show_progress: Optional[bool] = None) -> tuple[Union[list, Iterator],
                                                                                          RunSummary]:
    """Edit every unfinished row of ``job`` with ``execute``; return the output rows and a summary.

    Rows finished by an earlier run with the same fingerprint are reused with their files untouched, unless the
    row's instruction or images changed since, or its image is missing or cut short: those are redone. Bad rows
    become error rows. Progress is checkpointed every ``job.save_interval`` rows; on SIGINT/SIGTERM the batches
    in flight finish, the checkpoint is flushed and ``RunInterrupted`` is raised. The output rows are a list
    when ``job.rows`` is one, else an iterator that reads the input again (see ``EditJob.output_rows``).

    The job's output folders are locked for the run (``dataflow.io.lock``): a second run into the same folder is
    refused with one line naming the first.
    """
    with output_locks(job.output_folders()):  # one run at a time per folder; refused before anything is read
        return _drive(job, execute, show_progress)


def _drive(job: EditJob, execute: Executor, show_progress: Optional[bool]) -> tuple[Union[list, Iterator],
                                                                                  RunSummary]:
    started = time.monotonic()
    checkpoint = Checkpoint(job.progress_file, job.serving.fingerprint(), job.save_interval)
    planner = Planner(job, checkpoint.finished())
    records = RecordStore(job.image_io)
    counts = {"generated": 0, "reused": 0, "warnings": 0, "changed": 0, "damaged": 0}
    signatures: dict[int, int] = {}  # row_signature of the rows in flight, by index: stored with their records
    progress = Progress(job, show_progress)

    def on_record(record: dict) -> None:
        signature = signatures.pop(record["index"], None)
        if records.succeeded(record["index"]):
            return  # a retried batch delivered this row twice: keep the first result
        records.add(record["index"], record["output"], record["error"])
        counts["generated"] += record["error"] is None
        counts["warnings"] += record.get("warnings", 0)
        if signature is not None:
            record = dict(record, signature=format(signature, "016x"))
        checkpoint.add(record)
        progress.advance()

    def batches() -> Iterator[list]:
        for planned in planner:
            if isinstance(planned, list):
                for task in planned:
                    signatures[task.index] = task.signature
                    if task.redo:
                        counts[task.redo] += 1
                yield planned
            elif planned.get("reused"):
                records.add(planned["index"], planned["output"], planned["error"])
                counts["reused"] += 1
                progress.advance()
            else:
                on_record(planned)

    planned = batches()
    try:
        with InterruptGuard() as guard:
            try:
                execute(planned, on_record, lambda: guard.signum is not None)
            finally:
                planned.close()  # here, not whenever garbage collection gets to it: it shuts down the probe pool
            stopped = guard.signum is not None
            if stopped and not (planner.finished and len(records) == planner.total):
                raise RunInterrupted(
                    guard.signum,
                    f"interrupted; finished rows are saved in {job.progress_file}. "
                    "Run the same command again to resume.",
                )
            if not planner.finished:
                raise RuntimeError("the engine returned before taking every batch")
    finally:
        checkpoint.close()
        progress.close()
    summary = RunSummary(planner.total, counts["generated"], counts["reused"], records.failed,
                         time.monotonic() - started, warnings=counts["warnings"], usage=job.serving.usage(),
                         changed=counts["changed"], damaged=counts["damaged"])
    return job.output_rows(records, planner.planned_rows), summary


class Progress:
    """The rows-done bar. Its total comes from a background count of the input's rows, so that reading a large
    input to know its size never delays the first batch.

    Without a terminal (nohup, SLURM, a pipe), where tqdm draws no bar, a line is logged every ``LOG_EVERY_S``
    seconds instead: rows done, the rate over the last interval and the time left at that rate. A stall shows
    too, since the lines come from a timer, not from finished rows. ``show=False`` shows neither.
    """

    def __init__(self, job: EditJob, show: Optional[bool]):
        known = len(job.rows) if isinstance(job.rows, list) else None
        self.bar = tqdm(total=known, unit="row", desc="editing", disable=None if show is None else not show)
        self._counted: Optional[int] = known
        self.done = 0
        count = getattr(job.rows, "count", None)
        logs = show is None and self.bar.disable
        if known is None and count is not None and (logs or not self.bar.disable):
            threading.Thread(target=self._count, args=(count,), name="dataflow-count", daemon=True).start()
        self._stop = threading.Event()
        if logs:
            threading.Thread(target=self._log_lines, name="dataflow-progress", daemon=True).start()

    def _count(self, count: Callable[[], int]) -> None:
        try:
            self._counted = count()
        except Exception:  # the bar merely lacks a total; planning reports any real problem with the input
            pass

    def advance(self) -> None:
        self.done += 1
        if self._counted is not None and self.bar.total != self._counted:
            self.bar.total = self._counted
        self.bar.update(1)

    def _log_lines(self) -> None:
        last_done, last_time = 0, time.monotonic()
        while not self._stop.wait(LOG_EVERY_S):
            done, now = self.done, time.monotonic()
            logger.info("%s", progress_line(done, self._counted, (done - last_done) / (now - last_time)))
            last_done, last_time = done, now

    def close(self) -> None:
        self._stop.set()
        self.bar.close()


def progress_line(done: int, total: Optional[int], rate: float) -> str:
    """``editing: 120/240 rows (50%), 0.4 rows/s, about 5 min left``: one progress line for a log."""
    if total:
        text = f"editing: {done:,}/{total:,} rows ({100 * done // total}%), {rate:.3g} rows/s"
        if rate > 0 and done < total:
            text += f", about {_duration((total - done) / rate)} left"
        return text
    return f"editing: {done:,} rows done, {rate:.3g} rows/s"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
