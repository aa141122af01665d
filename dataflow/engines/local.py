"""The in-process engine: the driver and one ``BatchWorker`` share this process and its device.

CPU work overlaps the accelerator's: while batch k is edited, batch k+1 is decoded and batch k-1's PNGs are
encoded and written by background threads (Pillow releases the GIL there). A batch's records reach the driver
only once its files are on disk, so the checkpoint never names a file that does not exist.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional

from dataflow.engines.driver import drive
from dataflow.engines.job import EditJob
from dataflow.engines.summary import RunSummary
from dataflow.engines.worker import BatchWorker


class LocalEngine:
    """Edit a job in this process, batch after batch; see ``drive`` for the guarantees."""

    def run(self, job: EditJob, show_progress: Optional[bool] = None) -> tuple[list[dict], RunSummary]:
        worker = BatchWorker(job.serving, job.image_io)
        return drive(job, lambda *args: execute_overlapped(worker, *args), show_progress)


def execute_overlapped(worker: BatchWorker, batches, on_record, should_stop) -> None:
    """Decode ahead and save behind the edit of each batch, with two I/O threads."""
    if not batches:
        return
    saving: Optional[Future] = None

    def hand_over(future: Optional[Future]) -> None:
        for record in future.result() if future is not None else ():
            on_record(record)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="dataflow-io") as io:
        decoding = io.submit(worker.decode, batches[0])
        try:
            for position in range(len(batches)):
                if should_stop():
                    break
                decoded = decoding.result()
                if position + 1 < len(batches):
                    decoding = io.submit(worker.decode, batches[position + 1])
                edited = worker.edit(decoded)
                hand_over(saving)
                saving = io.submit(worker.save, edited)
        finally:
            hand_over(saving)
