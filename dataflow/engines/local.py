"""The in-process engine: the driver and one ``BatchWorker`` share this process and its device."""

from __future__ import annotations

from typing import Optional

from dataflow.engines.driver import drive
from dataflow.engines.job import EditJob
from dataflow.engines.summary import RunSummary
from dataflow.engines.worker import BatchWorker


class LocalEngine:
    """Edit a job in this process, batch after batch; see ``drive`` for the guarantees."""

    def run(self, job: EditJob, show_progress: Optional[bool] = None) -> tuple[list[dict], RunSummary]:
        worker = BatchWorker(job.serving, job.image_io)

        def execute(batches, on_record, should_stop) -> None:
            for batch in batches:
                if should_stop():
                    return
                for record in worker.run(batch):
                    on_record(record)

        return drive(job, execute, show_progress)
