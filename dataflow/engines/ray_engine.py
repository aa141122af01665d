"""The Ray engine: a pool of Ray Data actors, one per GPU of a cluster, edits the batches; the driver checkpoints.

Each actor loads the model once and edits one batch per call. Records stream back to the driver as batches
finish, so the usual checkpoint, resume and exactly-once guarantees hold (see ``driver.py``). Inputs, outputs
and the model folder must be on a filesystem that every node mounts at the same path.

An actor that dies (a crash, a lost node) is restarted by Ray and its batch is retried; a batch that has been
tried ``max_attempts`` times becomes error rows, so a row that kills every worker cannot loop forever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from typing import Iterator, Optional

from dataflow.core.errors import InputError
from dataflow.core.validation import check_positive_int
from dataflow.engines.driver import drive
from dataflow.engines.job import EditJob
from dataflow.engines.summary import RunSummary
from dataflow.engines.tasks import RowTask
from dataflow.engines.records import make_record
from dataflow.engines.worker import BatchWorker
from dataflow.logger import get_logger

logger = get_logger()

DEFAULT_CPU_WORKERS = 2  # without GPUs each worker holds its own model copy in RAM: keep the default pool small


def import_ray():
    """Import Ray and Ray Data, or explain how to install them."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError("the ray engine needs Ray: pip install 'dataflow-edit[ray]'") from None
    return ray


class RayEngine:
    """Run an EditJob on Ray Data.

    Args:
        address: the cluster to join ("auto", "ray://head:10001", ...); default: ``RAY_ADDRESS`` if set, else a
            local Ray started for this run. Ignored when Ray is already initialized in this process.
        num_workers: actors in the pool; default one per GPU of the cluster, or 2 without GPUs.
        num_gpus_per_worker: GPUs each actor reserves (0.5 puts two actors on a GPU); default 1 when the
            cluster has GPUs, else 0 (the actors edit on CPUs).
        ray_init_kwargs: more arguments for ``ray.init`` (``runtime_env``, ``num_cpus``, ...).
        max_attempts: how often a batch is tried before its rows fail because the actor editing it died.
    """

    def __init__(
        self,
        address: Optional[str] = None,
        num_workers: Optional[int] = None,
        num_gpus_per_worker: Optional[float] = None,
        ray_init_kwargs: Optional[dict] = None,
        max_attempts: int = 2,
    ):
        if num_workers is not None:
            check_positive_int(num_workers=num_workers)
        check_positive_int(max_attempts=max_attempts)
        if num_gpus_per_worker is not None and not (
            isinstance(num_gpus_per_worker, (int, float)) and num_gpus_per_worker >= 0
        ):
            raise InputError(f"num_gpus_per_worker must be a number >= 0, got {num_gpus_per_worker!r}")
        self.address = address
        self.num_workers = num_workers
        self.num_gpus_per_worker = num_gpus_per_worker
        self.ray_init_kwargs = dict(ray_init_kwargs or {})
        self.max_attempts = max_attempts

    def run(self, job: EditJob, show_progress: Optional[bool] = None) -> tuple[list[dict], RunSummary]:
        """Edit ``job`` on the cluster; see ``drive`` for the guarantees."""
        return drive(job, lambda *args: self._execute(job, *args), show_progress)

    def _execute(self, job: EditJob, batches, on_record, should_stop) -> None:
        """Start or join Ray, stream every batch's records to ``on_record``; leave Ray as it was found.

        The batches are all planned before the first one starts: Ray Data reads its input from a list.
        """
        batches = list(batches)
        if not batches:
            return
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            start_ray(ray, self.address, self.ray_init_kwargs)
        try:
            with contextlib.closing(self._records(ray, job, batches)) as records:
                for record in records:
                    on_record(record)
                    if should_stop():  # batches in flight are dropped; their rows are redone by the next run
                        return
        finally:
            if started:
                ray.shutdown()

    def _records(self, ray, job: EditJob, batches: list) -> Iterator[dict]:
        """Records of every row of ``batches``, in the order batches finish."""
        size, gpus = self._pool(ray, len(batches))
        attempts = ray.remote(num_cpus=0)(AttemptCounter).remote()
        items = [{"batch_id": i, "tasks": [task_fields(t) for t in batch]} for i, batch in enumerate(batches)]
        dataset = ray.data.from_items(items, override_num_blocks=len(items))  # one block per batch: streams
        dataset.context.enable_progress_bars = False  # the driver's bar counts rows
        dataset = dataset.map_batches(
            EditActor,
            fn_constructor_kwargs={
                "serving": job.serving,
                "image_io": job.image_io,
                "device": "cuda" if gpus else "cpu",
                "cwd": os.getcwd(),
                "attempts": attempts,
                "max_attempts": self.max_attempts,
            },
            compute=ray.data.ActorPoolStrategy(size=size),
            batch_size=1,
            batch_format="pyarrow",
            num_gpus=gpus,
        )
        # No driver-side prefetching: records are a few fields per row, and Ray Data's prefetcher thread outlives an
        # iterator closed early (a stop request), then calls ray.wait during or after ray.shutdown, which can kill
        # the driver before it reports the saved progress.
        for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
            yield from table.to_pylist()

    def _pool(self, ray, num_batches: int) -> tuple[int, float]:
        """(actors in the pool, GPUs per actor), from the options and what the cluster has."""
        resources = ray.cluster_resources()
        cluster_gpus = resources.get("GPU", 0)
        gpus = self.num_gpus_per_worker if self.num_gpus_per_worker is not None else (1 if cluster_gpus else 0)
        if gpus and cluster_gpus < gpus:
            logger.warning("each worker asks for %s GPU but the Ray cluster has %s; the run waits until GPUs join "
                           "(pass num_gpus_per_worker=0 to edit on CPUs)", gpus, cluster_gpus)
        if self.num_workers:
            size = self.num_workers
        elif gpus:
            size = max(1, int(cluster_gpus // gpus))
        else:
            size = max(1, min(DEFAULT_CPU_WORKERS, int(resources.get("CPU", 1))))
        size = min(size, num_batches)
        logger.info("editing %d batches with %d Ray workers (%s GPU each)", num_batches, size, gpus)
        return size, gpus


def start_ray(ray, address: Optional[str], kwargs: dict) -> None:
    """``ray.init``, keeping this process's SIGTERM handler, and with a hint when the cluster cannot be reached.

    ``ray.init`` installs a SIGTERM handler that exits at once; the driver's own handler stops the run after
    saving progress, so it is put back.
    """
    previous = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address or None, **kwargs)
    except ConnectionError as exc:
        raise InputError(f"cannot reach the Ray cluster ({exc}). Start one with 'ray start --head', or leave "
                         "the address out to run on a local Ray started for this run.") from None
    finally:
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def task_fields(task: RowTask) -> dict:
    """A task as plain fields Arrow can hold; the bucket only mattered for batching, which is done."""
    fields = dataclasses.asdict(task)
    del fields["bucket"]
    return fields


class AttemptCounter:
    """A tiny Ray actor that counts how often each batch was started, across actor restarts."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def next(self, batch_id: int) -> int:
        self.counts[batch_id] = self.counts.get(batch_id, 0) + 1
        return self.counts[batch_id]


class EditActor:
    """A Ray Data actor: builds a ``BatchWorker`` once, then edits one batch per call.

    Ray restarts an actor that dies and retries its batch without limit, so the actor counts attempts itself
    (in ``attempts``, which outlives it) and fails the rows of a batch started more than ``max_attempts`` times.
    """

    def __init__(self, serving, image_io, device: str, cwd: str, attempts, max_attempts: int):
        follow_driver_cwd(cwd)
        serving.use_device(device)
        self.worker = BatchWorker(serving, image_io)
        self.attempts = attempts
        self.max_attempts = max_attempts

    def __call__(self, batch):
        import ray

        batch_id = batch.column("batch_id")[0].as_py()
        tasks = [RowTask(**fields) for fields in batch.column("tasks")[0].as_py()]
        attempt = ray.get(self.attempts.next.remote(batch_id))
        if attempt > self.max_attempts:
            error = f"the Ray worker editing this row's batch died {attempt - 1} times"
            records = [make_record(task.index, task.key, error=error) for task in tasks]
        else:
            records = self.worker.run(tasks)
        return records_table(records)


def follow_driver_cwd(cwd: str) -> None:
    """Work in the driver's folder, so that relative paths name the same files as in the driver.

    Ray starts workers in the folder where Ray itself was started (``ray start``, or the first ``ray.init``),
    rarely the driver's. Relative paths in the job (input images, ``save_path``, the model folder) are meant
    relative to the driver, and the output rows must hold the same paths as a local run would write.
    """
    if os.path.isdir(cwd):
        os.chdir(cwd)
    else:
        logger.warning("the driver's folder %s does not exist on this node; relative paths resolve against %s",
                       cwd, os.getcwd())


def records_table(records: list[dict]):
    """Records as an Arrow table with fixed types (a batch of failed rows would otherwise infer nulls)."""
    import pyarrow as pa

    schema = pa.schema([("key", pa.string()), ("index", pa.int64()), ("output", pa.list_(pa.string())),
                        ("error", pa.string())])
    return pa.Table.from_pylist(records, schema=schema)
