"""From a run's output rows to training examples: one per edited image, with its source, instruction and scores.

A row with two edited images gives two examples sharing the source. Failed rows (no ``output_image``, or an
``output_image_error``) give one example without an edited image, which the exporter leaves out unless asked.
Rows read from a filter step's rejected file are marked ``rejected`` with the rules they failed.

Scores are flattened to one column per leaf (``ScoreColumns``): the built-in measures ``change``, ``clip`` and
``dino`` name their leaves plainly (``changed_fraction``, ``ssim``, ``no_change``, ``clip_t``, ``clip_i``,
``dino``); every other metric prefixes its leaves with its name (``judge_sc``, ``judge_pq``, ``judge_overall``,
``judge_reason``); deeper levels join with ``_``; a name two leaves (or a fixed column) would share falls back to
the full joined path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional, Union

from dataflow.core.errors import RowError
from dataflow.core.rows import image_paths, instruction, is_missing, row_key
from dataflow.io.sources import source_exists
from dataflow.utils.manifest import find_output_image

SCORE_KEY = "scores"
EDIT_TYPE_KEY = "edit_type"  # the kind of edit, as ``dataflow-edit instruct`` records it on each row it writes
BARE_METRICS = ("change", "clip", "dino")
RESERVED = ("id", "output_index", "instruction", "source_image", "source_images", "edited_image", "error",
            "rejected", "rejected_because", "input_image", "edit_prompt", "license")
UNKNOWN_LICENSE = "unknown"


@dataclass
class Example:
    """One training example: a source (or several), an instruction, and one edited image (None: a failed row).

    ``key`` names it in WebDataset and ai-toolkit exports: ``{row:08d}_{k}`` (the row's index in its file and the
    image's index in ``output_image``), ``rejected_`` in front for the rejected file; it never holds a dot.
    """

    key: str
    row: int
    id: str
    output_index: Optional[int]
    instruction: str
    sources: list
    edited: Optional[str]
    score_entry: Optional[dict] = None
    scores: dict = field(default_factory=dict)  # the entry flattened, by column (``ScoreColumns.flatten``)
    error: Optional[str] = None
    rejected: bool = False
    rejected_because: list = field(default_factory=list)
    fields: dict = field(default_factory=dict)  # the row's other fields, for the WebDataset json
    license: str = UNKNOWN_LICENSE  # of the model that made the edit (``output_image_license``), as its card said


@dataclass
class Problem:
    """Why one example (or a whole row) could not be exported: ``kind`` is "missing image" or "bad row"."""

    kind: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class PathResolver:
    """Where a row's images are: sources against the run's input folder, edited images as the gallery finds them.

    Args:
        output_file: the file being exported; its folder is the fallback for both kinds.
        input_dir: the run's input file's folder (``run.json``); relative source paths are meant against it.
        run_dir: the folder the run was started in (``run.json``); relative edited paths are tried there first.
    """

    def __init__(self, output_file: str, input_dir: Optional[str] = None, run_dir: Optional[str] = None):
        self.folder = os.path.dirname(os.path.abspath(output_file))
        self.input_dir = os.path.abspath(input_dir) if input_dir else self.folder
        self.run_dir = os.path.abspath(run_dir) if run_dir else self.folder

    def sources(self, row: Mapping, image_key: str) -> list:
        """The row's source images, absolute; one not under the input folder is looked for in the output's."""
        found = []
        for path, fallback in zip(image_paths(row, image_key, self.input_dir),
                                  image_paths(row, image_key, self.folder)):
            if not source_exists(path) and source_exists(fallback):
                path = fallback
            if not source_exists(path):
                raise FileNotFoundError(f"source image not found: {path}")
            found.append(path)
        return found

    def edited(self, value: Any) -> str:
        """An edited image's path as the run wrote it, made absolute (see ``find_output_image``)."""
        return find_output_image(value, self.run_dir, self.folder, what="edited image")


class ScoreColumns:
    """The score columns of an export, learnt from every scores entry before writing (parquet needs its schema).

    ``observe`` each entry, then ``columns`` is the ordered list of (column, dtype) with dtype "bool",
    "float64" or "string", and ``flatten`` gives one entry's values by column.
    """

    def __init__(self):
        self._types: dict[tuple, set] = {}
        self._names: Optional[dict[tuple, str]] = None

    def observe(self, entry: Any) -> None:
        if isinstance(entry, Mapping):
            for path, value in _leaves(entry):
                kinds = self._types.setdefault(path, set())
                if not is_missing(value):
                    kinds.add(_kind(value))
            self._names = None

    @property
    def names(self) -> dict:
        if self._names is None:
            short = {path: _short_name(path) for path in self._types}
            taken: dict[str, int] = {}
            for name in short.values():
                taken[name] = taken.get(name, 0) + 1
            self._names = {}
            for path, name in short.items():
                if taken[name] > 1 or name in RESERVED:
                    name = "_".join(path)
                    name = f"score_{name}" if name in RESERVED else name
                self._names[path] = name
        return self._names

    @property
    def columns(self) -> list:
        return [(self.names[path], _dtype(kinds)) for path, kinds in self._types.items()]

    def flatten(self, entry: Any) -> dict:
        """``{column: value}`` for every score column (None where this entry lacks it), coerced to its dtype."""
        values = dict(_leaves(entry)) if isinstance(entry, Mapping) else {}
        return {self.names[path]: _coerce(values.get(path), _dtype(kinds)) for path, kinds in self._types.items()}


def _leaves(entry: Mapping, prefix: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    for key, value in entry.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, prefix + (str(key),))
        else:
            yield prefix + (str(key),), value


def _short_name(path: tuple) -> str:
    if len(path) > 1 and path[0] in BARE_METRICS:
        return "_".join(path[1:])
    return "_".join(path)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "float64"
    return "string"


def _dtype(kinds: set) -> str:
    if kinds == {"bool"}:
        return "bool"
    if kinds and kinds <= {"float64", "bool"}:
        return "float64"
    return "string"


def _coerce(value: Any, dtype: str) -> Any:
    if is_missing(value):
        return None
    if dtype == "bool":
        return bool(value)
    if dtype == "float64":
        return float(value)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


class RowReader:
    """The examples of one file's rows, one row at a time.

    Args:
        paths: where the images are.
        image_key, conversation_key, output_key: the run's field names (``run.json``); failed rows carry
            ``f"{output_key}_error"``.
        rejected: the file is a filter step's rejected file: its examples are marked rejected.
    """

    def __init__(self, paths: PathResolver, image_key: str = "images", conversation_key: str = "conversations",
                 output_key: str = "output_image", rejected: bool = False):
        self.paths = paths
        self.image_key = image_key
        self.conversation_key = conversation_key
        self.output_key = output_key
        self.error_key = f"{output_key}_error"
        self.license_key = f"{output_key}_license"
        self.rejected = rejected
        self.own = {image_key, conversation_key, output_key, self.error_key, self.license_key, SCORE_KEY,
                    "rejected_because"}

    def is_failed(self, row: Mapping) -> bool:
        return not outputs_of(row, self.output_key) or not _blank(row.get(self.error_key))

    def examples(self, index: int, row: Mapping, where: str) -> Iterator[Union[Example, Problem]]:
        """The row's examples (a failed row gives one with ``edited=None``), or a ``Problem`` for each that cannot
        be exported: a missing image, or a row whose instruction or image field is unusable."""
        tag = "rejected_" if self.rejected else ""
        try:
            text = instruction(row, self.conversation_key)
            sources = self.paths.sources(row, self.image_key)
        except RowError as exc:
            yield Problem("bad row", where, str(exc))
            return
        except FileNotFoundError as exc:
            yield Problem("missing image", where, str(exc))
            return
        common = dict(row=index, id=_identity(row, self.image_key, self.conversation_key), instruction=text,
                      sources=sources, rejected=self.rejected, fields={k: v for k, v in row.items()
                                                                         if k not in self.own},
                      rejected_because=[str(r) for r in _as_list(row.get("rejected_because"))],
                      license=str(row.get(self.license_key) or UNKNOWN_LICENSE))
        if self.is_failed(row):
            error = row.get(self.error_key)
            yield Example(key=f"{tag}{index:08d}", output_index=None, edited=None,
                          error=None if _blank(error) else str(error), **common)
            return
        outputs = outputs_of(row, self.output_key)
        scores = row.get(SCORE_KEY)
        aligned = isinstance(scores, list) and len(scores) == len(outputs)
        for k, value in enumerate(outputs):
            try:
                edited = self.paths.edited(value)
            except (RowError, FileNotFoundError) as exc:
                yield Problem("missing image", f"{where}, output {k}", str(exc))
                continue
            yield Example(key=f"{tag}{index:08d}_{k}", output_index=k, edited=edited,
                          score_entry=scores[k] if aligned and isinstance(scores[k], Mapping) else None, **common)


def outputs_of(row: Mapping, output_key: str) -> list:
    return [v for v in _as_list(row.get(output_key)) if not is_missing(v)]


def _identity(row: Mapping, image_key: str, conversation_key: str) -> str:
    key = row_key(row, image_key, conversation_key)
    return key[3:] if key.startswith("id:") else key


def _as_list(value: Any) -> list:
    if is_missing(value):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _blank(value: Any) -> bool:
    return is_missing(value) or (isinstance(value, str) and not value.strip())
