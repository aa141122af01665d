"""From input rows to batches: row identities, parsed tasks, and resolution buckets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

from dataflow.core import rows as row_fields


@dataclass
class RowTask:
    """A row ready to edit: where its image is, what to do, and which bucket it batches in."""

    index: int
    key: str
    image_path: str
    instruction: str
    bucket: Hashable = None
    suffix: str = ""  # tells apart output files when another row's files already hold the default names


def unique_row_keys(rows: Sequence[Mapping], image_key: str, conversation_key: str) -> list[str]:
    """Each row's identity; the n-th repeat of an identical row gets ``#n`` appended so every key is unique."""
    seen: dict[str, int] = {}
    keys = []
    for row in rows:
        base = row_fields.row_key(row, image_key, conversation_key)
        repeat = seen.get(base, 0)
        seen[base] = repeat + 1
        keys.append(base if repeat == 0 else f"{base}#{repeat}")
    return keys


def parse_row(row: Mapping, index: int, key: str, image_key: str, conversation_key: str, base_dir: str) -> RowTask:
    """A ``RowTask`` for the row, or ``RowError`` saying which field is wrong."""
    return RowTask(
        index=index,
        key=key,
        image_path=row_fields.image_path(row, image_key, base_dir),
        instruction=row_fields.instruction(row, conversation_key),
    )


def group_batches(tasks: Sequence[RowTask], batch_size: int) -> list[list[RowTask]]:
    """Batches of at most ``batch_size`` tasks that share a bucket, buckets in order of first appearance."""
    buckets: dict[Hashable, list[RowTask]] = {}
    for task in tasks:
        buckets.setdefault(task.bucket, []).append(task)
    return [group[i : i + batch_size] for group in buckets.values() for i in range(0, len(group), batch_size)]
