"""Checking, before a run, that its input's rows have the columns it reads.

A dataset whose columns are named otherwise (``image``, ``instruction``) would fail every row alike, one by one;
when none of the first rows has a column, the run stops before any work, naming the flags to pass and the
input's columns that look right for them.
"""

from __future__ import annotations

from itertools import islice
from typing import Any, Iterable, Mapping, Optional

from dataflow.core.errors import InputError

SAMPLE_ROWS = 20  # rows looked at; one with the column is enough
# Column names that usually hold each role, most likely first (WebDataset members are named by extension).
LIKELY_COLUMNS = {
    "image": ("image", "images", "source_image", "input_image", "original_image", "src_image", "image_path", "img",
              "jpg", "png", "jpeg", "webp"),
    "conversation": ("instruction", "edit_instruction", "edit_prompt", "prompt", "instructions", "conversations",
                     "conversation", "messages", "text", "txt", "caption"),
}
FLAGS = {"image": "--image-key", "conversation": "--conversation-key"}


def check_columns(rows: Iterable[Mapping[str, Any]], columns: Mapping[str, str], source: str) -> None:
    """``InputError`` when none of the first rows of ``rows`` has one of ``columns`` (role -> column name, the
    roles being "image" and "conversation"), suggesting ``--image-key X --conversation-key Y`` with the input's
    own column names. Reads rows only until each column has been seen once."""
    missing, fields, count = dict(columns), {}, 0
    for row in islice(rows, SAMPLE_ROWS):
        count += 1
        fields.update(dict.fromkeys(str(name) for name in row))
        missing = {role: name for role, name in missing.items() if name not in row}
        if not missing:
            return
    if count == 0:
        return  # an empty input is a run of nothing, which the summary says
    names = " or ".join(repr(name) for name in missing.values())
    read = "its only row" if count == 1 else f"its first {count} rows"
    flags = " ".join(f"{FLAGS[role]} {_likely(role, list(fields), columns) or 'COLUMN'}" for role in missing)
    listed = ", ".join(list(fields)[:12]) + (", ..." if len(fields) > 12 else "")
    raise InputError(f"{source}: no column {names} in {read} (its columns: {listed or 'none'}); name the "
                     f"columns to read with {flags}")


def _likely(role: str, fields: list, columns: Mapping[str, str]) -> Optional[str]:
    """The input's column that most likely holds ``role``, not one the run reads for another role."""
    taken = set(columns.values())
    for name in LIKELY_COLUMNS[role]:
        if name in fields and name not in taken:
            return name
    return None
