"""Table cells that hold images: Hugging Face image structs (``{"bytes", "path"}``), raw bytes, lists of them.

``datasets`` stores an ``Image`` feature as a struct of the encoded file's bytes and its original path; a
``Sequence(Image)`` as a list of such structs. A reader replaces each embedded image with a ``SourceRef``
string; a struct with a path and no bytes (an image the dataset keeps as a file) becomes that path.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Optional

from dataflow.core.errors import RowError
from dataflow.core.reference import SourceRef

DIGEST_CHARS = 32  # hex digits of the SHA-256 kept in a reference: 128 bits, collisions never met in practice


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]


def is_image_struct(value: Any) -> bool:
    return isinstance(value, dict) and "bytes" in value and set(value) <= {"bytes", "path"}


def _is_image_value(value: Any) -> bool:
    return isinstance(value, (bytes, bytearray)) or is_image_struct(value)


def holds_images(value: Any) -> bool:
    """True for an image cell, or a list whose items are image cells (or nulls) with at least one image."""
    if _is_image_value(value):
        return True
    return (isinstance(value, list) and any(_is_image_value(v) for v in value)
            and all(v is None or _is_image_value(v) for v in value))


def referenced_row(row: dict, name: str, index: int) -> dict:
    """Row ``index`` of the shard ``name`` with each image cell replaced by its reference."""
    return {column: referenced(value, SourceRef(name, row=index, column=column)) if holds_images(value) else value
            for column, value in row.items()}


def referenced(value: Any, ref: SourceRef) -> Any:
    """The cell with each embedded image replaced by its reference (``ref`` plus item and digest)."""
    if isinstance(value, list):
        return [None if v is None else _one(v, dataclasses.replace(ref, item=i)) for i, v in enumerate(value)]
    return _one(value, ref)


def _one(value: Any, ref: SourceRef) -> Optional[str]:
    data = value.get("bytes") if isinstance(value, dict) else value
    if data is None:
        return value.get("path")  # kept as a file by the dataset: an ordinary image path
    return str(dataclasses.replace(ref, sha256=digest(bytes(data))))


def image_bytes(cell: Any, ref: SourceRef) -> bytes:
    """The bytes ``ref`` points at inside the cell read back from its shard; ``RowError`` if they are not there
    or are no longer the bytes the reference was made from."""
    if ref.item is not None:
        if not isinstance(cell, list) or ref.item >= len(cell):
            raise RowError(f"{ref}: column {ref.column!r} of row {ref.row} has no item {ref.item}")
        cell = cell[ref.item]
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if not isinstance(data, (bytes, bytearray)):
        raise RowError(f"{ref}: column {ref.column!r} of row {ref.row} holds no embedded image bytes")
    data = bytes(data)
    if ref.sha256 and digest(data) != ref.sha256:
        raise RowError(f"{ref}: the shard changed since this reference was made (row {ref.row} now holds "
                       "another image); run again on the current input")
    return data
