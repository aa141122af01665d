"""One worker process per device: each loads the model once and edits the batches the driver hands it.

The driver keeps the checkpoint, so results merge into the same step file with the same resume and exactly-once
guarantees as one process. A worker that dies has its batch handed to the others (``max_attempts`` times in
all, then its rows become error rows, so a batch that kills every worker cannot loop forever); rows not
reached are redone on the next run.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import traceback
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Optional, Sequence

from dataflow.core.errors import InputError
from dataflow.engines.driver import drive
from dataflow.engines.job import EditJob
from dataflow.engines.summary import RunSummary
from dataflow.engines.records import make_record
from dataflow.engines.worker import BatchWorker
from dataflow.logger import get_logger

logger = get_logger()


def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else every device torch sees."""
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [d.strip() for d in declared.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def parse_devices(text: str) -> list[str]:
    """``"0,1"`` -> GPU ids; ``"cpu,cpu"`` -> two CPU workers."""
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices or not all(d == "cpu" or d.isdigit() for d in devices):
        raise InputError(f"--devices takes GPU ids or 'cpu', separated by commas (e.g. 0,1 or cpu,cpu), got {text!r}")
    return devices


class MultiProcessEngine:
    """Edit a job with one worker process per entry of ``devices`` (GPU ids, or "cpu").

    Args:
        devices: e.g. ["0", "1"] for two GPUs or ["cpu", "cpu"] for two CPU workers; default: the visible GPUs.
        max_attempts: how often a batch is tried before its rows fail because workers died on it.
    """

    def __init__(self, devices: Optional[Sequence[str]] = None, max_attempts: int = 2):
        self.devices = list(devices) if devices else visible_gpus()
        if not self.devices:
            raise InputError("no GPU is visible; pass devices=['cpu', 'cpu'] (--devices cpu,cpu) for CPU workers")
        self.max_attempts = max_attempts

    def run(self, job: EditJob, show_progress: Optional[bool] = None) -> tuple[list[dict], RunSummary]:
        return drive(job, lambda *args: self._execute(job, *args), show_progress)

    def _execute(self, job: EditJob, batches, on_record, should_stop) -> None:
        context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
        numbered = enumerate(batches)
        queue = deque(itertools.islice(numbered, len(self.devices)))  # first batches, then any a dead worker left
        if not queue:
            return
        threads = max(1, (os.cpu_count() or 1) // len(self.devices))
        workers = [_WorkerHandle(context, device, job, threads) for device in self.devices[: len(queue)]]
        attempts: dict[int, int] = {}
        try:
            while True:
                if not should_stop():
                    for worker in workers:
                        if worker.batch is None and refill(queue, numbered):
                            worker.give(*queue.popleft())
                if not workers:
                    if refill(queue, numbered):
                        raise RuntimeError("every worker process died; finished rows are checkpointed, "
                                           "rerun to resume")
                    return
                if all(w.batch is None for w in workers):
                    return  # every batch is done, or a stop was asked for and the batches in flight are in
                self._collect(workers, queue, attempts, on_record)
        finally:
            for worker in workers:
                worker.stop()

    def _collect(self, workers: list, queue: deque, attempts: dict, on_record) -> None:
        """Wait for a result or a death; hand results to the driver, requeue (or fail) a dead worker's batch."""
        busy = [w for w in workers if w.batch is not None]
        ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=1.0))
        for worker in busy:
            if worker.conn in ready and worker.poll_result(on_record):
                continue
            if worker.process.sentinel in ready or not worker.process.is_alive():
                batch_id, batch = worker.batch
                workers.remove(worker)
                attempts[batch_id] = attempts.get(batch_id, 0) + 1
                reason = f"worker process on device {worker.device} died (exit code {worker.process.exitcode})"
                if attempts[batch_id] < self.max_attempts and workers:
                    logger.warning("%s; its batch of %d rows goes to another worker", reason, len(batch))
                    queue.appendleft((batch_id, batch))
                else:
                    for task in batch:
                        on_record(make_record(task.index, task.key, error=f"{reason} while editing this row"))


def refill(queue: deque, numbered) -> bool:
    """Make sure ``queue`` holds a batch if any is left, taking the next planned one; False when none is."""
    if not queue:
        queue.extend(itertools.islice(numbered, 1))
    return bool(queue)


class _WorkerHandle:
    """The driver's view of one worker process: its pipe, and the batch it is working on."""

    def __init__(self, context, device: str, job: EditJob, threads: int):
        self.device = device
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker_main, args=(device, job.serving, job.image_io, child, threads),
                                       name=f"dataflow-worker-{device}", daemon=True)
        self.process.start()
        child.close()
        self.batch = None

    def give(self, batch_id: int, batch) -> None:
        self.batch = (batch_id, batch)
        self.conn.send((batch_id, batch))

    def poll_result(self, on_record) -> bool:
        """Take a finished batch if one arrived; raise if the worker reported a failure of the run itself."""
        try:
            kind, payload = self.conn.recv()
        except (EOFError, OSError):
            return False  # the pipe broke: the worker died, handled by the caller
        if kind == "error":
            raise RuntimeError(f"worker on device {self.device} failed: {payload}")
        for record in payload:
            on_record(record)
        self.batch = None
        return True

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
        self.conn.close()


def worker_main(device: str, serving, image_io, conn: Connection, threads: int) -> None:
    """A worker process: pin the device, load the model once (lazily), edit batches until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the driver decides
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    serving.use_device("cpu" if device == "cpu" else "cuda")
    worker = BatchWorker(serving, image_io)
    while True:
        message = conn.recv()
        if message is None:
            break
        batch_id, batch = message
        try:
            conn.send(("ok", worker.run(batch)))
        except Exception as exc:  # a failure of the run itself: report it to the driver, which stops the run
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
            break
    serving.close()
