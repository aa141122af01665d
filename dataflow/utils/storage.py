"""``FileStorage``: the step files a pipeline reads and writes.

Step 0 reads ``first_entry_file_name``; the operator run at step n writes
``{cache_path}/{file_name_prefix}_step{n}.{cache_type}``. Rows travel as plain dicts, so every input field comes
out unchanged; ``read("dataframe")`` wraps them in a pandas DataFrame for users who want one.
"""

from __future__ import annotations

import codecs
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, Optional

from dataflow.core.errors import InputError
from dataflow.io.atomic import atomic_open
from dataflow.io.lock import output_lock
from dataflow.io.sources import input_folder, open_dataset
from dataflow.io.sources.parquet import pyarrow_parquet
from dataflow.logger import get_logger

FORMATS = ("jsonl", "json", "csv", "parquet")
logger = get_logger()


class FileStorage:
    """File-backed storage of a pipeline's rows, one file per step.

    Args:
        first_entry_file_name: the input: a jsonl, json, csv or parquet file (judged by its extension), a folder
            of parquet shards, a ``datasets.save_to_disk`` folder, or WebDataset tar shards (``a-{000..009}.tar``).
        cache_path: folder of the step files.
        file_name_prefix: step files are named ``{file_name_prefix}_step{n}.{cache_type}``.
        cache_type: format of the step files: "jsonl", "json", "csv" or "parquet".
        skip_malformed_lines: skip JSONL lines that are not valid JSON objects with a warning, instead of stopping
            with an error that names the line.
    """

    def __init__(
        self,
        first_entry_file_name: str,
        cache_path: str = "./cache",
        file_name_prefix: str = "dataflow_cache_step",
        cache_type: Literal["jsonl", "json", "csv", "parquet"] = "jsonl",
        skip_malformed_lines: bool = False,
    ):
        if cache_type not in FORMATS:
            raise InputError(f"cache_type must be one of {', '.join(FORMATS)}, got {cache_type!r}")
        if not first_entry_file_name:
            raise InputError("first_entry_file_name is required")
        self.first_entry_file_name = first_entry_file_name
        self.cache_path = cache_path
        self.file_name_prefix = file_name_prefix
        self.cache_type = cache_type
        self.skip_malformed_lines = skip_malformed_lines
        self.operator_step = -1

    # -- steps -------------------------------------------------------------------------------------------
    def step(self) -> "FileStorage":
        """Advance to the next operator: the first call reads the input file and writes step 1."""
        self.operator_step += 1
        return self

    def reset(self) -> "FileStorage":
        self.operator_step = -1
        return self

    def file_path(self, step: int) -> str:
        """The file of ``step``: the input file for step 0, else a step file in ``cache_path``."""
        if step < 0:
            raise InputError("call storage.step() before reading or writing")
        if step == 0:
            return self.first_entry_file_name
        return os.path.join(self.cache_path, f"{self.file_name_prefix}_step{step}.{self.cache_type}")

    @property
    def read_path(self) -> str:
        return self.file_path(self.operator_step)

    @property
    def write_path(self) -> str:
        return self.file_path(self.operator_step + 1)

    @property
    def input_dir(self) -> str:
        """Folder that relative image paths in the rows are resolved against: the input file's folder (a folder
        input's own: see ``dataflow.io.sources.input_folder``)."""
        return input_folder(self.first_entry_file_name)

    # -- read / write ------------------------------------------------------------------------------------
    def read(self, output_type: Literal["dataframe", "dict"] = "dataframe") -> Any:
        """The rows of the current step, as a DataFrame or a list of dicts."""
        if output_type not in ("dataframe", "dict"):
            raise InputError(f"output_type must be 'dataframe' or 'dict', got {output_type!r}")
        records = list(self.stream())
        if output_type == "dict":
            return records
        import pandas as pd

        return pd.DataFrame(records)

    def stream(self) -> "RowStream":
        """The rows of the current step as a ``RowStream``: read again on each pass, never held whole (JSONL)."""
        return RowStream(self.read_path, self._read_format, self.skip_malformed_lines)

    def write(self, data: Any) -> str:
        """Write rows (a DataFrame, a list of dicts, or any iterable of dicts, streamed for JSONL) as the next
        step's file, atomically; return its path."""
        path = self.write_path
        with output_lock(os.path.dirname(os.path.abspath(path))):  # the run's, when a run writes it
            count = write_records(path, _as_records(data), self.cache_type)
        logger.info("wrote %d rows to %s", count, path)
        return path

    @property
    def _read_format(self) -> Optional[str]:
        return self.cache_type if self.operator_step > 0 else None


class RowStream:
    """The rows of one input, iterable any number of times, with memory that stays flat: JSONL is read line by
    line, datasets (parquet, ``save_to_disk`` folders, WebDataset tars: ``dataflow.io.sources``) a shard's
    row group at a time with their embedded images replaced by references.

    Args:
        path: the file, folder or brace pattern of shards; ``fmt`` defaults to what it is.
        skip_malformed_lines: skip (and warn about, on the first pass only) JSONL lines that are not JSON objects.
    """

    def __init__(self, path: str, fmt: Optional[str] = None, skip_malformed_lines: bool = False):
        self.path = path
        self.dataset = open_dataset(path) if fmt in (None, "parquet") else None
        self.fmt = self.dataset.kind if self.dataset else fmt or format_of(path)
        if self.dataset is None and not os.path.isfile(path):
            raise InputError(f"input file not found: {path}")
        self.skip_malformed_lines = skip_malformed_lines
        self._warned = False

    def numbered(self) -> Iterator[tuple[Optional[int], dict]]:
        """(line number, row) pairs; the line number is None for formats without lines."""
        if self.fmt == "jsonl":
            warn, self._warned = not self._warned, True
            yield from _iter_jsonl(self.path, self.skip_malformed_lines, warn)
        elif self.dataset is not None:
            for row in self.dataset.rows():
                yield None, {k: _from_cell(v) for k, v in row.items()}
        else:
            for row in _read_table(self.path, self.fmt):
                yield None, row

    def __iter__(self) -> Iterator[dict]:
        return (row for _, row in self.numbered())

    def count(self) -> int:
        """How many rows the input holds (for JSONL: its non-blank lines, counted without parsing them)."""
        if self.dataset is not None:
            return self.dataset.count()
        if self.fmt != "jsonl":
            return len(_read_table(self.path, self.fmt))
        with open(self.path, "rb") as handle:
            return sum(1 for line in handle if line.strip())


def read_records(path: str, fmt: Optional[str] = None, skip_malformed_lines: bool = False) -> list[dict]:
    """Read a file of rows into a list of dicts; errors name the file (and the line, for JSONL)."""
    return list(RowStream(path, fmt, skip_malformed_lines))


def _read_table(path: str, fmt: str) -> list[dict]:
    """The rows of a JSON or CSV file (read whole: these formats have no line to stream by)."""
    if fmt == "json":
        with open(path, encoding="utf-8-sig") as handle:
            try:
                data = json.load(handle)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                                 f"{exc.start}); save it as UTF-8") from None
            except RecursionError:
                raise InputError(f"{path}: invalid JSON (nested too deeply to read)") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InputError(f"{path}: a JSON input must be a list of objects")
        return data
    import pandas as pd

    frame = pd.read_csv(path, encoding="utf-8-sig")
    return [{k: _from_cell(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def write_records(path: str, records: Iterable[dict], fmt: str) -> int:
    """Write rows to ``path`` in ``fmt``, atomically (JSONL streams them); return how many were written."""
    count = 0
    if fmt == "jsonl":
        with atomic_open(path) as handle:
            for record in records:
                handle.write(dumps_row(record) + "\n")
                count += 1
        return count
    records = list(records)
    if fmt == "json":
        with atomic_open(path) as handle:
            handle.write(json.dumps([_jsonable(r) for r in records], ensure_ascii=False, indent=2))
    else:
        import pandas as pd

        frame = pd.DataFrame([_without_surrogates(_jsonable(r)) for r in records])
        for column in frame.columns:
            if _needs_json_text(frame[column], fmt):
                frame[column] = frame[column].map(lambda v: json.dumps(v, ensure_ascii=False))
        if fmt == "csv":
            with atomic_open(path) as handle:
                frame.to_csv(handle, index=False)
        else:
            pyarrow_parquet()  # says which extra to install when pyarrow is missing
            with atomic_open(path, "wb") as handle:
                frame.to_parquet(handle)
    return len(records)


def _needs_json_text(column, fmt: str) -> bool:
    """CSV stores every nested value as JSON text; parquet only columns that mix nested and plain values."""
    nested = column.map(lambda v: isinstance(v, (list, dict)))
    return bool(nested.any()) and (fmt == "csv" or not bool(nested.all()))


def dumps_row(record: Mapping[str, Any]) -> str:
    """One JSON line for a row; NaN becomes null and numpy values become plain JSON.

    A lone surrogate (``"caf\\ud800"``, which UTF-8 cannot hold) stays in the text; ``atomic_open`` writes it as
    its JSON escape, which reads back as the same string.
    """
    try:  # most rows are plain JSON already: skip the walk over every value
        return json.dumps(record, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(_jsonable(record), ensure_ascii=False)


def _without_surrogates(value: Any) -> Any:
    """Keys and strings with each lone surrogate as the text of its escape (``\\ud800``), for the table formats,
    whose writers (pandas, pyarrow) fail on one; other values unchanged."""
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    return value


def _iter_jsonl(path: str, skip_malformed_lines: bool, warn: bool = True) -> Iterator[tuple[int, dict]]:
    """(line number, row) pairs, one line at a time; blank lines are not rows, and a UTF-8 byte-order mark (as
    Windows editors write) is not part of the first line.

    The file is read as bytes and each line decoded on its own, so a line that is not UTF-8 is one malformed line
    (named by its number, skipped with the others) rather than a decoding error that stops the whole read.
    """
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            if not raw.strip():
                continue
            record, problem = parse_jsonl_line(raw)
            if problem is None:
                yield number, record
            elif not skip_malformed_lines:
                raise InputError(
                    f"{path} line {number}: {problem}. Fix the line, or skip malformed lines "
                    "(--skip-malformed-lines; in Python, FileStorage(skip_malformed_lines=True))."
                )
            elif warn:
                logger.warning("%s line %d skipped: %s", path, number, problem)


def parse_jsonl_line(raw: bytes) -> tuple[Optional[dict], Optional[str]]:
    """(the row, None), or (None, what is wrong with the line, in words)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})"  # some messages end in "at"
    except RecursionError:
        return None, "invalid JSON (nested too deeply to read)"
    if not isinstance(record, dict):
        return None, f"expected a JSON object, got {type(record).__name__}"
    return record, None


def _as_records(data: Any) -> Iterable[dict]:
    """Rows to write: a list or other iterable of dicts as given, a DataFrame as dicts."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return [{k: _from_cell(v) for k, v in row.items()} for row in data.to_dict(orient="records")]
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Iterable):
        raise InputError(f"write() takes a DataFrame or a list of dicts, got {type(data).__name__}")
    return (_checked_row(r) for r in data)


def _checked_row(row: Any) -> dict:
    if not isinstance(row, (dict, Mapping)):
        raise InputError(f"write() takes a DataFrame or a list of dicts, got a row of type {type(row).__name__}")
    return dict(row)


def _from_cell(value: Any) -> Any:
    """Undo what tabular formats do to nested values: JSON text back to lists, arrays to lists, NaN to None."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return value
    return _jsonable(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return _jsonable(value.tolist())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):  # binary nested where no reference can point at it
        return f"<binary: {len(value)} bytes, not copied>"
    return value


def format_of(path: str) -> str:
    """The row format a file's extension names: jsonl, json, csv or parquet."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise InputError(f"{path}: unsupported input format {ext!r}; use one of {', '.join(FORMATS)}, a "
                         "datasets.save_to_disk folder, a folder of parquet shards, or WebDataset .tar shards")
    return ext
