"""Datasets as input: parquet shards, ``datasets.save_to_disk`` folders and WebDataset tars, read as rows.

``open_dataset(path)`` says whether ``path`` names such a dataset and streams its rows, each embedded image
replaced by a reference string (``reference``); ``read_source_bytes`` reads an image back from a reference or
a plain path, so everything downstream handles both alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Optional

from dataflow.core.errors import InputError, RowError
from dataflow.core.reference import SourceRef, content_id, parse_reference
from dataflow.io.sources import arrow, parquet, webdataset

__all__ = ["DatasetInput", "SourceRef", "content_id", "dataset_kind", "embedded_ref", "input_folder",
           "open_dataset", "parse_reference", "read_embedded", "read_source_bytes", "source_exists"]

_READERS = {"parquet": parquet, "arrow": arrow, "webdataset": webdataset}
_BY_CONTAINER = {"parquet": parquet, "arrow": arrow, "tar": webdataset}


@dataclass
class DatasetInput:
    """The shards of one dataset input, read in order.

    Args:
        path: the input as given: a file, a folder, or a brace pattern of tar shards.
        kind: "parquet", "arrow" (save_to_disk) or "webdataset".
        files: the shard files, in reading order.
    """

    path: str
    kind: str
    files: list

    @property
    def base_dir(self) -> str:
        """The folder references are written relative to, as relative image paths are (``input_folder``)."""
        return input_folder(self.path)

    def rows(self) -> Iterator[dict]:
        reader = _READERS[self.kind]
        for file in self.files:
            yield from reader.iter_rows(file, os.path.relpath(os.path.abspath(file), self.base_dir))

    def count(self) -> int:
        reader = _READERS[self.kind]
        return sum(reader.count_rows(file) for file in self.files)


def input_folder(path: str) -> str:
    """The folder an input's relative image paths and references are meant against: a folder input itself
    (shards, a save_to_disk dataset), else the folder of the file or of the brace pattern's shards."""
    path = os.path.abspath(path)
    return path if os.path.isdir(path) else os.path.dirname(path)


def dataset_kind(path: str) -> Optional[str]:
    """"parquet", "arrow" or "webdataset" when ``path`` names a dataset input; None for any other path."""
    lower = path.lower()
    if os.path.isdir(path):
        return _folder_kind(path)
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith(".arrow"):
        return "arrow"
    if lower.endswith(".tar"):  # one shard, or a brace pattern of them
        return "webdataset"
    return None


def open_dataset(path: str) -> Optional[DatasetInput]:
    """The dataset ``path`` names, its shards checked to exist; None when ``path`` is a plain row file."""
    kind = dataset_kind(path)
    if kind is None:
        return None
    if kind == "webdataset":
        files = webdataset.expand_braces(path) if not os.path.isdir(path) else _files_under(path, ".tar", False)
    elif os.path.isdir(path):
        files = arrow.data_files(path) if kind == "arrow" else _files_under(path, ".parquet", True)
    else:
        files = [path]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputError(f"{path}: shard not found: {missing[0]}{more}")
    return DatasetInput(path, kind, files)


def embedded_ref(path: str) -> Optional[SourceRef]:
    """The reference ``path`` spells, unless it is not one or a file of that very name exists (then it is a path)."""
    ref = parse_reference(path)
    return ref if ref is not None and not os.path.isfile(path) else None


def read_embedded(ref: SourceRef) -> bytes:
    """The bytes of the image ``ref`` points at in its shard; ``RowError`` saying why they cannot be read."""
    try:
        return _BY_CONTAINER[ref.kind].read_image(ref)
    except InputError as exc:
        raise RowError(f"{ref}: {exc}") from None


def read_source_bytes(path: str) -> bytes:
    """The bytes of a source image: a reference's embedded image, or a plain file's contents."""
    ref = embedded_ref(path)
    if ref is not None:
        return read_embedded(ref)
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise RowError(f"image not found: {path}") from None
    except OSError as exc:
        raise RowError(f"cannot read image {path}: {exc.strerror or exc}") from None


def source_exists(path: str) -> bool:
    """True when ``path`` is a file, or a reference whose shard is a file (the row itself is checked on read)."""
    ref = embedded_ref(path)
    return os.path.isfile(ref.container) if ref is not None else os.path.isfile(path)


def _folder_kind(folder: str) -> str:
    if os.path.isfile(os.path.join(folder, arrow.STATE)) or os.path.isfile(os.path.join(folder, arrow.DATASET_DICT)):
        return "arrow"
    if _files_under(folder, ".parquet", True):
        return "parquet"
    if _files_under(folder, ".tar", False):
        return "webdataset"
    raise InputError(f"{folder} is a folder without parquet shards, tar shards or a datasets.save_to_disk "
                     "dataset; give a .jsonl, .json, .csv or .parquet file, or such a folder")


def _files_under(folder: str, suffix: str, recursive: bool) -> list[str]:
    """The files in ``folder`` (and below, if ``recursive``) whose names end with ``suffix``, sorted by path."""
    if not recursive:
        return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.lower().endswith(suffix))
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, n) for n in names if n.lower().endswith(suffix))
    return sorted(found)
