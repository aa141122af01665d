"""WebDataset tar shards as rows: one row per sample, its text members decoded, its other members referenced.

A sample is the run of consecutive members that share a key, the member name up to the first dot of its base
name (WebDataset's rule): ``000123.jpg``, ``000123.txt`` and ``000123.json`` are one sample with the fields
``__key__``, ``jpg`` (a reference), ``txt`` (the text) and ``json`` (the parsed object). Only uncompressed tars
are read: a member is read back by seeking to it, which a compressed stream does not allow.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from typing import Iterator

from dataflow.core.errors import InputError, RowError
from dataflow.core.reference import SourceRef
from dataflow.io.sources.cache import LoadOnceCache, shard_version

KEY_FIELD = "__key__"
TEXT_EXTENSIONS = ("txt", "text", "caption", "instruction", "prompt")
JSON_EXTENSIONS = ("json",)
INTEGER_EXTENSIONS = ("cls", "cls2", "index")
_BRACES = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")
_INDEXES = LoadOnceCache(size=64)  # member offsets of the tars read by reference lately


def expand_braces(pattern: str) -> list[str]:
    """The shard names a brace pattern spells: ``a-{000..002}.tar`` -> three names, zero padding kept;
    ``{train,test}`` -> two; several groups multiply out; a name without braces is itself."""
    match = _BRACES.search(pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[:match.start()], match.group(1), pattern[match.end():]
    numbers = _RANGE.match(body)
    if numbers:
        first, last = numbers.groups()
        width = len(first) if first.startswith("0") else 0
        step = 1 if int(last) >= int(first) else -1
        choices = [str(n).zfill(width) for n in range(int(first), int(last) + step, step)]
    elif "," in body:
        choices = body.split(",")
    else:
        raise InputError(f"{pattern}: {{{body}}} is not a brace pattern (use {{000..009}} or {{a,b}})")
    return [name for choice in choices for name in expand_braces(head + choice + tail)]


def split_name(name: str) -> tuple[str, str]:
    """(key, extension) of a member name: the folder part and the base name up to its first dot, the rest."""
    folder, base = os.path.split(name)
    stem, dot, ext = base.partition(".")
    return os.path.join(folder, stem) if folder else stem, ext


def iter_rows(path: str, name: str) -> Iterator[dict]:
    """The samples of the tar ``path`` as rows; ``name`` is how their references spell the shard."""
    with _open(path) as tar:
        key, row = None, {}
        for info in _members(tar, path):
            if not info.isfile():
                continue
            sample, ext = split_name(info.name)
            if not ext:
                continue  # no extension, no field name: WebDataset skips such members too
            if sample != key:
                if row:
                    yield row
                key, row = sample, {KEY_FIELD: sample}
            row[ext] = _field(tar, info, ext, name)
        if row:
            yield row


def count_rows(path: str) -> int:
    with _open(path) as tar:
        keys = [split_name(info.name) for info in _members(tar, path) if info.isfile()]
    return sum(1 for i, (key, ext) in enumerate(keys) if ext and (i == 0 or keys[i - 1][0] != key))


def read_image(ref: SourceRef) -> bytes:
    """The bytes of the member ``ref`` names (``ref.container`` is the tar's path)."""
    place = _INDEXES.get((ref.container, shard_version(ref)), lambda: _index(ref.container)).get(ref.member)
    if place is None:
        raise RowError(f"{ref}: the shard has no member {ref.member!r}")
    offset, size = place
    with open(ref.container, "rb") as handle:
        handle.seek(offset)
        data = handle.read(size)
    if len(data) != size:
        raise RowError(f"{ref}: the shard ends inside member {ref.member!r} (truncated tar)")
    return data


def _field(tar: tarfile.TarFile, info: tarfile.TarInfo, ext: str, name: str):
    """A member's value: text, a parsed JSON object, an integer, or a reference to its bytes."""
    last = ext.rsplit(".", 1)[-1].lower()
    if last not in TEXT_EXTENSIONS + JSON_EXTENSIONS + INTEGER_EXTENSIONS:
        return str(SourceRef(name, member=info.name))
    text = tar.extractfile(info).read().decode("utf-8", errors="replace")
    if last in JSON_EXTENSIONS:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    if last in INTEGER_EXTENSIONS and text.strip().lstrip("-").isdigit():
        return int(text.strip())
    return text


def _open(path: str) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:")
    except FileNotFoundError:
        raise InputError(f"WebDataset shard not found: {path}") from None
    except tarfile.ReadError as exc:
        raise InputError(f"{path}: not an uncompressed tar file ({exc}); compressed shards cannot be read by "
                         "member, decompress them first") from None
    except OSError as exc:
        raise InputError(f"cannot open {path}: {exc.strerror or exc}") from None


def _members(tar: tarfile.TarFile, path: str) -> Iterator[tarfile.TarInfo]:
    """The tar's members in order; ``InputError`` naming the shard where its headers stop making sense."""
    last = None
    try:
        for info in tar:
            last = info.name
            yield info
    except (tarfile.TarError, EOFError) as exc:
        where = f"after member {last!r}" if last else "at its start"
        raise InputError(f"{path}: truncated or corrupt tar {where} ({exc})") from None


def _index(path: str) -> dict:
    """Member name -> (offset of its data, size), from the tar's headers. A truncated tar keeps the members
    before the break: reading the cut one then says it is truncated."""
    index = {}
    with _open(path) as tar:
        try:
            for info in tar:
                if info.isfile():
                    index[info.name] = (info.offset_data, info.size)
        except (tarfile.TarError, EOFError):
            pass
    return index
