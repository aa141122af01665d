"""Dry runs: find every problem a job would hit, without generating anything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from dataflow.core.errors import RowError
from dataflow.engines.job import EditJob
from dataflow.engines.tasks import RowKeys, check_image_count, check_instruction_length, parse_row


@dataclass
class Problem:
    """What is wrong with one row; ``line`` is its line in a JSONL input, else None."""

    index: int
    line: Optional[int]
    message: str

    def where(self, source: str) -> str:
        return f"{source}:{self.line}" if self.line is not None else f"{source} row {self.index + 1}"


def validate_job(job: EditJob) -> tuple[int, list[Problem]]:
    """(rows checked, problems): every row's fields, images (fully decoded), image count and instruction,
    checked as the run would check them, one row at a time."""
    problems = []
    keys = RowKeys(job.image_key, job.conversation_key)
    index = -1
    for index, (line, row) in enumerate(job.numbered_rows()):
        try:
            task = parse_row(row, index, keys.next(row), job.image_key, job.conversation_key, job.base_dir,
                             turns=job.serving.wants_earlier_turns)
            check_image_count(task, job.serving)
            check_instruction_length(task, job.serving)
            job.image_io.read(task.image_paths)
            job.serving.check_instruction(task.instruction)
        except RowError as exc:
            problems.append(Problem(index, line, str(exc)))
    return index + 1, problems
