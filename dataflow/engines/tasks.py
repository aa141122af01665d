"""From input rows to batches: row identities, parsed tasks, and resolution buckets over a bounded window."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterator, Mapping, Optional, Sequence

from dataflow.core import rows as row_fields
from dataflow.core.errors import RowError
from dataflow.core.serving import ImageEditServing
from dataflow.core.reference import parse_reference


@dataclass
class RowTask:
    """A row ready to edit: where its images are, what to do, and which bucket it batches in."""

    index: int
    key: str
    image_paths: list
    instruction: str
    bucket: Hashable = None
    suffix: str = ""  # tells apart output files when another row's files already hold the default names
    warnings: list = field(default_factory=list)  # decoder warnings seen while planning, one line each
    edited_paths: list = field(default_factory=list)  # the row's edited images, when the job scores edits
    signature: Optional[int] = None  # what the row asks for (``row_signature``), kept with its result
    redo: str = ""  # why an earlier result of this row is not reused: "changed" or "damaged" (see ``REDO``)
    earlier_turns: list = field(default_factory=list)  # earlier user messages, for servings editing turn by turn

    @property
    def image_path(self) -> str:
        """The first reference image: the one the output's shape follows."""
        return self.image_paths[0]


class RowKeys:
    """Each row's identity, one row at a time; the n-th repeat of an identical row gets ``#n`` appended."""

    def __init__(self, image_key: str, conversation_key: str):
        self.image_key = image_key
        self.conversation_key = conversation_key
        self._seen: dict[str, int] = {}

    def next(self, row: Mapping) -> str:
        base = row_fields.row_key(row, self.image_key, self.conversation_key)
        repeat = self._seen.get(base, 0)
        self._seen[base] = repeat + 1
        return base if repeat == 0 else f"{base}#{repeat}"


def row_signature(task: RowTask, identity: Callable[[str], list] = None) -> int:
    """What determines a row's result besides the serving's settings (which the checkpoint's fingerprint holds):
    its instruction and each image it reads, as 63 bits of a BLAKE2b digest (a non-negative int64, which Arrow
    holds when the Ray engine ships the task).

    An image file counts by its size and modification time, which a stat gives without reading the file (a
    rerun of a million rows must not read every image); an image embedded in a dataset shard by the content
    digest its reference carries, or else by its shard's size and time and its member name. A row whose ``id``
    stayed while its instruction or image changed therefore gets another signature and is redone. Copying the
    images without keeping their times (``cp`` without ``-p``) changes the signature too, which costs a redo,
    never a wrong result. ``identity`` may be a cached ``image_identity`` (many rows share an image).
    """
    identity = identity or image_identity
    parts = [task.instruction] + [identity(path) for path in task.image_paths + task.edited_paths]
    if task.earlier_turns:  # a multi-turn row's earlier instructions shape its result too
        parts.append(["turns", *task.earlier_turns])
    digest = hashlib.blake2b(json.dumps(parts).encode("ascii"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def image_identity(path: str) -> list:
    """[size, mtime in ns] of an image file; the content digest or the shard's identity of an embedded image;
    ["missing"] when neither (the row then fails on reading, with the reason)."""
    try:
        info = os.stat(path)
    except OSError:
        ref = parse_reference(path)
        if ref is None:
            return ["missing"]
        if ref.sha256:
            return ["sha256", ref.sha256]
        return image_identity(ref.container) + [ref.member, ref.row, ref.column, ref.item]
    return [info.st_size, info.st_mtime_ns]


def row_digest(key: str, row: Mapping, image_key: str, conversation_key: str) -> int:
    """One machine word for a row's key and what it asks for (its image value and conversation), to remember what
    was planned at each place of a million-row input: a row whose ``id`` stayed but whose instruction changed
    differs. Python's hash, stable within the process, which is as long as the memory lasts."""
    asked = json.dumps([row.get(image_key), row.get(conversation_key)], sort_keys=True, default=str)
    return hash((key, asked))


def parse_row(row: Mapping, index: int, key: str, image_key: str, conversation_key: str, base_dir: str,
              turns: bool = False) -> RowTask:
    """A ``RowTask`` for the row, or ``RowError`` saying which field is wrong; with ``turns``, the earlier user
    messages too (``ImageEditServing.wants_earlier_turns``)."""
    return RowTask(
        index=index,
        key=key,
        image_paths=row_fields.image_paths(row, image_key, base_dir),
        instruction=row_fields.instruction(row, conversation_key),
        earlier_turns=row_fields.earlier_turns(row, conversation_key) if turns else [],
    )


def check_image_count(task: RowTask, serving: ImageEditServing) -> None:
    """``RowError`` when the row has more reference images than the serving takes (``max_input_images``)."""
    limit = serving.max_input_images
    if limit is not None and len(task.image_paths) > limit:
        raise RowError(
            f"this row has {len(task.image_paths)} images, but {serving.display_name} takes "
            f"{'one image' if limit == 1 else f'at most {limit} images'} per row; "
            "the API backend (--backend api) takes several"
        )


def check_instruction_length(task: RowTask, serving: ImageEditServing) -> None:
    """``RowError`` when the row's instruction is longer than the serving reads (``max_instruction_chars``)."""
    limit = serving.max_instruction_chars
    if limit is not None and len(task.instruction) > limit:
        raise RowError(f"the instruction is {len(task.instruction):,} characters long; {serving.display_name} "
                       f"reads at most {limit:,}")


def bucket_of(serving_bucket: Hashable, sizes: Sequence[tuple[int, int]]) -> Hashable:
    """The batching bucket: the serving's key for the first image, plus the sizes of any further images."""
    return serving_bucket if len(sizes) == 1 else (serving_bucket, tuple(sizes[1:]))


class Bucketer:
    """Groups tasks into batches of at most ``batch_size`` that share a bucket, holding at most ``window`` tasks.

    A full batch leaves at once; when the window is full, the fullest partial bucket leaves as a smaller batch,
    so memory and the wait before a row is edited stay bounded however large the input is.
    """

    def __init__(self, batch_size: int, window: int):
        self.batch_size = batch_size
        self.window = max(window, batch_size)
        self._buckets: dict[Hashable, list[RowTask]] = {}
        self._held = 0

    def add(self, task: RowTask) -> Iterator[list[RowTask]]:
        group = self._buckets.setdefault(task.bucket, [])
        group.append(task)
        self._held += 1
        if len(group) >= self.batch_size:
            yield self._take(task.bucket)
        elif self._held > self.window:
            yield self._take(max(self._buckets, key=lambda b: len(self._buckets[b])))

    def flush(self) -> Iterator[list[RowTask]]:
        """The partial batches left at the end, buckets in order of first appearance."""
        while self._buckets:
            yield self._take(next(iter(self._buckets)))

    def _take(self, bucket: Hashable) -> list[RowTask]:
        batch = self._buckets.pop(bucket)
        self._held -= len(batch)
        return batch

