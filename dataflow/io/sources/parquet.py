"""Parquet shards as rows: one row group at a time, embedded images replaced by references.

This reads what ``datasets`` writes (``to_parquet``, ``push_to_hub``'s shards, ``load_dataset("parquet")``'s
inputs) and any other parquet file; cells without images come out as ``pyarrow`` gives them. Reading an image
back by reference decodes one column of one row group, and the last few such columns are cached, so the rows
of a batch (neighbours in the shard) cost one read.
"""

from __future__ import annotations

import bisect
from typing import Iterator

from dataflow.core.errors import InputError, RowError
from dataflow.core.reference import SourceRef
from dataflow.io.sources.cache import LoadOnceCache, shard_version
from dataflow.io.sources.cells import image_bytes, referenced_row

CACHED_COLUMNS = 4  # row-group columns kept for reads by reference (a group of 100 images is ~100 MB)
_STARTS = LoadOnceCache(size=64)
_COLUMNS = LoadOnceCache(size=CACHED_COLUMNS)


def pyarrow_parquet():
    """``pyarrow.parquet``, or an ``InputError`` saying which extra to install."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("parquet files need pyarrow: pip install 'dataflow-edit[parquet]'") from None
    return pq


def iter_rows(path: str, name: str) -> Iterator[dict]:
    """The rows of the parquet file ``path``; ``name`` is how its references spell the file."""
    shard = _open(path)
    offset = 0
    for group in range(shard.num_row_groups):
        rows = shard.read_row_group(group).to_pylist()
        for i, row in enumerate(rows):
            yield referenced_row(row, name, offset + i)
        offset += len(rows)


def count_rows(path: str) -> int:
    return _open(path).metadata.num_rows


def read_image(ref: SourceRef) -> bytes:
    """The bytes of the image ``ref`` points at in a parquet shard (``ref.container`` is the file's path)."""
    stat = shard_version(ref)
    starts = _STARTS.get((ref.container, stat), lambda: _group_starts(ref.container))
    if ref.row is None or ref.row >= starts[-1]:
        raise RowError(f"{ref}: the shard has {starts[-1]} rows, no row {ref.row}")
    group = bisect.bisect_right(starts, ref.row) - 1
    cells = _COLUMNS.get((ref.container, stat, group, ref.column),
                         lambda: _group_column(ref.container, group, ref.column))
    if cells is None:
        raise RowError(f"{ref}: the shard has no column {ref.column!r}")
    return image_bytes(cells[ref.row - starts[group]].as_py(), ref)


def _open(path: str):
    try:
        return pyarrow_parquet().ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"{path}: not a readable parquet file: {exc}") from None


def _group_starts(path: str) -> list:
    """The first row of each row group, then the row count."""
    metadata = pyarrow_parquet().ParquetFile(path).metadata
    starts = [0]
    for group in range(metadata.num_row_groups):
        starts.append(starts[-1] + metadata.row_group(group).num_rows)
    return starts


def _group_column(path: str, group: int, column: str):
    """One column of one row group, or None when the shard has no such column."""
    shard = pyarrow_parquet().ParquetFile(path)
    if column not in shard.schema_arrow.names:
        return None
    return shard.read_row_group(group, columns=[column]).column(0)
