"""Where an image embedded in a dataset shard lives, written as one string that travels like a path.

Rows read from parquet shards, ``datasets.save_to_disk`` folders and WebDataset tars hold their images' bytes;
the reader puts a reference in their place, so every part of a run that passes image paths around (planning,
every engine, the output JSONL, scoring, the gallery, export) carries a short string instead of the bytes::

    shards/train-00000.parquet#row=17&column=image&sha256=9f2c...   (row 17 of that shard's ``image`` column)
    shards/train-00000.parquet#row=3&column=images&item=1&sha256=.. (the second image of a list column)
    data-00000-of-00001.arrow#row=5&column=image&sha256=...        (a save_to_disk folder's Arrow file)
    shards/edit-000003.tar#member=000123.jpg                        (a member of a WebDataset tar)

A reference is resolved against the input's folder like a relative image path. ``sha256`` (the first 32 hex
digits of the bytes' digest) is the image's identity: it keys a row that has no ``id``, whichever shard or row
it moves to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qs, quote, urlencode

CONTAINERS = (".parquet", ".arrow", ".tar")
_FIELDS = ("row", "column", "item", "member", "sha256")


@dataclass(frozen=True)
class SourceRef:
    """One embedded image: its shard (``container``) and where in it (a row and column, or a tar member)."""

    container: str
    row: Optional[int] = None
    column: Optional[str] = None
    item: Optional[int] = None
    member: Optional[str] = None
    sha256: Optional[str] = None

    @property
    def kind(self) -> str:
        """"parquet", "arrow" or "tar": how the container is read."""
        return os.path.splitext(self.container)[1].lower().lstrip(".")

    def __str__(self) -> str:
        fields = {name: getattr(self, name) for name in _FIELDS if getattr(self, name) is not None}
        return f"{self.container}#{urlencode(fields, quote_via=quote, safe='')}"

    @property
    def name(self) -> str:
        """A file name for the image: the tar member's, else ``{shard}-{row}[-{item}]`` (no extension)."""
        if self.member is not None:
            return os.path.basename(self.member)
        stem = os.path.splitext(os.path.basename(self.container))[0]
        return f"{stem}-{self.row}" + (f"-{self.item}" if self.item is not None else "")


def parse_reference(text: object) -> Optional[SourceRef]:
    """The ``SourceRef`` that ``text`` spells, or None when it is not one (then it is a plain path)."""
    if not isinstance(text, str) or "#" not in text:
        return None
    container, _, query = text.rpartition("#")
    if not container.lower().endswith(CONTAINERS):
        return None
    try:
        fields = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True, strict_parsing=True).items()}
    except ValueError:
        return None
    if not fields or set(fields) - set(_FIELDS):
        return None
    try:
        ref = SourceRef(container, row=_int(fields.get("row")), column=fields.get("column"),
                        item=_int(fields.get("item")), member=fields.get("member"), sha256=fields.get("sha256"))
    except ValueError:
        return None
    located = ref.member is not None if ref.kind == "tar" else ref.row is not None and ref.column is not None
    return ref if located else None


def content_id(ref_or_text: object) -> Optional[str]:
    """``"sha256:<digest>"`` of a reference that carries its image's digest; None otherwise."""
    ref = ref_or_text if isinstance(ref_or_text, SourceRef) else parse_reference(ref_or_text)
    return f"sha256:{ref.sha256}" if ref is not None and ref.sha256 else None


def _int(value: Optional[str]) -> Optional[int]:
    if value is None:
        return None
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number
