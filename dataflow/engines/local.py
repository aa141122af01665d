"""The in-process engine: the driver and one ``BatchWorker`` share this process and its device.

CPU work overlaps the accelerator's: while batch k is edited, batch k+1 is decoded and batch k-1's PNGs are
encoded and written by background threads (Pillow releases the GIL there). A batch's records reach the driver
only once its files are on disk, so the checkpoint never names a file that does not exist.

A serving whose ``concurrency`` is above 1 (a remote API, where each call waits on the network) instead has
that many batches edited at once by threads, each batch's records handed over as soon as it is saved.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Iterator, Optional

from dataflow.engines.driver import drive
from dataflow.engines.job import EditJob
from dataflow.engines.summary import RunSummary
from dataflow.engines.worker import BatchWorker


class LocalEngine:
    """Edit a job in this process, batch after batch; see ``drive`` for the guarantees."""

    def run(self, job: EditJob, show_progress: Optional[bool] = None) -> tuple[list, RunSummary]:
        worker = BatchWorker(job.serving, job.image_io)
        if job.serving.concurrency > 1:
            return drive(job, lambda *args: execute_concurrently(worker, job.serving.concurrency, *args),
                         show_progress)
        return drive(job, lambda *args: execute_overlapped(worker, *args), show_progress)


def execute_overlapped(worker: BatchWorker, batches: Iterator[list], on_record, should_stop) -> None:
    """Decode ahead and save behind the edit of each batch, with two I/O threads."""
    saving: Optional[Future] = None

    def hand_over(future: Optional[Future]) -> None:
        for record in future.result() if future is not None else ():
            on_record(record)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="dataflow-io") as io:
        upcoming = next(batches, None)
        decoding = io.submit(worker.decode, upcoming) if upcoming is not None else None
        try:
            while decoding is not None and not should_stop():
                decoded = decoding.result()
                upcoming = next(batches, None)
                decoding = io.submit(worker.decode, upcoming) if upcoming is not None else None
                edited = worker.edit(decoded)
                hand_over(saving)
                saving = io.submit(worker.save, edited)
        finally:
            hand_over(saving)


def execute_concurrently(worker: BatchWorker, concurrency: int, batches: Iterator[list], on_record,
                         should_stop) -> None:
    """Up to ``concurrency`` batches in flight, each decoded, edited and saved by its own thread.

    A failure of the run itself (an exception from the serving, such as a refused API key) stops new batches
    from starting; the batches in flight finish and hand over their records before it is raised.
    """
    in_flight: set[Future] = set()
    failure: Optional[BaseException] = None
    exhausted = False
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="dataflow-edit") as pool:
        while True:
            while not exhausted and failure is None and len(in_flight) < concurrency and not should_stop():
                batch = next(batches, None)
                if batch is None:
                    exhausted = True
                else:
                    in_flight.add(pool.submit(worker.run, batch))
            if not in_flight:
                break
            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    records = future.result()
                except Exception as exc:  # noqa: BLE001 - re-raised below, once the other batches are handed over
                    failure = failure or exc
                    continue
                for record in records:
                    on_record(record)
    if failure is not None:
        raise failure
