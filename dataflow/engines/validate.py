"""Dry runs: find every problem a job would hit, without generating anything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from dataflow.core.errors import RowError
from dataflow.engines.job import EditJob
from dataflow.engines.tasks import parse_row, unique_row_keys


@dataclass
class Problem:
    """What is wrong with one row; ``line`` is its line in a JSONL input, else None."""

    index: int
    line: Optional[int]
    message: str

    def where(self, source: str) -> str:
        return f"{source}:{self.line}" if self.line is not None else f"{source} row {self.index + 1}"


def validate_job(job: EditJob, source_lines: Optional[Sequence[int]] = None) -> list[Problem]:
    """Every row's fields, image (fully decoded) and instruction, checked as the run would check them."""
    problems = []
    keys = unique_row_keys(job.rows, job.image_key, job.conversation_key)
    for index, key in enumerate(keys):
        try:
            task = parse_row(job.rows[index], index, key, job.image_key, job.conversation_key, job.base_dir)
            job.image_io.read(task.image_path)
            job.serving.check_instruction(task.instruction)
        except RowError as exc:
            line = source_lines[index] if source_lines is not None else None
            problems.append(Problem(index, line, str(exc)))
    return problems
