"""A ``datasets.save_to_disk`` folder (or one of its ``.arrow`` files) as rows.

``save_to_disk`` writes Arrow IPC stream files listed in ``state.json``; they are memory-mapped, so reading one
row back by reference touches only that row's pages.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

from dataflow.core.errors import InputError, RowError
from dataflow.core.reference import SourceRef
from dataflow.io.sources.cache import LoadOnceCache, shard_version
from dataflow.io.sources.cells import image_bytes, referenced_row

STATE = "state.json"
DATASET_DICT = "dataset_dict.json"
_TABLES = LoadOnceCache(size=16)  # memory-mapped tables: cheap to keep


def data_files(folder: str) -> list[str]:
    """The Arrow files of a ``save_to_disk`` folder, in order; ``InputError`` for a ``DatasetDict`` folder."""
    if os.path.isfile(os.path.join(folder, DATASET_DICT)):
        splits = sorted(d for d in os.listdir(folder) if os.path.isfile(os.path.join(folder, d, STATE)))
        raise InputError(f"{folder} is a DatasetDict with splits {', '.join(splits) or '(none found)'}; give one "
                         f"split's folder, e.g. {os.path.join(folder, splits[0] if splits else 'train')}")
    try:
        with open(os.path.join(folder, STATE), encoding="utf-8") as handle:
            names = [entry["filename"] for entry in json.load(handle)["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{folder}/{STATE}: not a datasets.save_to_disk state file ({exc})") from None
    return [os.path.join(folder, name) for name in names]


def iter_rows(path: str, name: str) -> Iterator[dict]:
    """The rows of the Arrow file ``path``; ``name`` is how its references spell the file."""
    offset = 0
    for batch in _table(path).to_batches():
        for i, row in enumerate(batch.to_pylist()):
            yield referenced_row(row, name, offset + i)
        offset += batch.num_rows


def count_rows(path: str) -> int:
    return _table(path).num_rows


def read_image(ref: SourceRef) -> bytes:
    """The bytes of the image ``ref`` points at in an Arrow file (``ref.container`` is the file's path)."""
    table = _TABLES.get((ref.container, shard_version(ref)), lambda: _table(ref.container))
    if ref.column not in table.column_names:
        raise RowError(f"{ref}: the file has no column {ref.column!r}")
    if ref.row is None or ref.row >= table.num_rows:
        raise RowError(f"{ref}: the file has {table.num_rows} rows, no row {ref.row}")
    return image_bytes(table.column(ref.column)[ref.row].as_py(), ref)


def _table(path: str):
    """The memory-mapped table of an Arrow IPC file (stream format, as ``datasets`` writes; or file format)."""
    try:
        import pyarrow as pa
    except ImportError:
        raise InputError("Arrow datasets need pyarrow: pip install 'dataflow-edit[parquet]'") from None
    try:
        return pa.ipc.open_stream(pa.memory_map(path, "r")).read_all()
    except pa.ArrowInvalid:
        try:
            return pa.ipc.open_file(pa.memory_map(path, "r")).read_all()
        except pa.ArrowInvalid as exc:
            raise InputError(f"{path}: not an Arrow IPC file: {exc}") from None
