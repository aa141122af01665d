"""The edit types instructions are written for: a small JSON file, shipped as ``edit_types.json`` beside this module.

Each type has a ``name`` (what ``--types`` and ``--quota`` say, and what each written row's ``edit_type`` holds),
a ``description`` (what a model is told the type means) and, optionally, ``phrases``: instructions the classic
backend can carry out exactly, which the offline ``templates`` writer picks from. A copy of the file, edited, is
given with ``taxonomy=`` (``--taxonomy`` on the command line).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from dataflow.core.errors import InputError

DEFAULT_TAXONOMY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "edit_types.json")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class EditType:
    """One kind of edit.

    Args:
        name: lower-case letters, digits and ``_``.
        description: one or two sentences a model reads to know what to write (and when to decline).
        category: a coarser group (object, scene, global ...), for reports.
        phrases: classic-grammar instructions for the ``templates`` writer; empty when it cannot write this type.
    """

    name: str
    description: str
    category: str = ""
    phrases: tuple = ()


@dataclass(frozen=True)
class Taxonomy:
    """The edit types of a run, in file order, and a short hash of the file's content (for fingerprints)."""

    types: tuple
    version: str

    def names(self) -> list:
        return [t.name for t in self.types]

    def get(self, name: str) -> EditType:
        """The type called ``name`` (spelled loosely: ``color/material`` is ``color_material``); ``InputError``
        naming the known types otherwise."""
        wanted = normalise_name(name)
        for edit_type in self.types:
            if edit_type.name == wanted:
                return edit_type
        raise InputError(f"unknown edit type {name!r}; the taxonomy has {', '.join(self.names())}")

    def select(self, names: Optional[Sequence[str]]) -> list:
        """The types called ``names`` in the order given (every type when None), each once."""
        if names is None:
            return list(self.types)
        chosen = []
        for name in names:
            edit_type = self.get(name)
            if edit_type not in chosen:
                chosen.append(edit_type)
        if not chosen:
            raise InputError("give at least one edit type")
        return chosen


def normalise_name(name: Any) -> str:
    """``"Color / Material"`` -> ``"color_material"``: how a type name is matched, in options and model answers."""
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


def load_taxonomy(path: Optional[str] = None) -> Taxonomy:
    """The taxonomy in ``path`` (default: the shipped ``edit_types.json``); ``InputError`` naming the file and
    what is wrong with it."""
    path = path or DEFAULT_TAXONOMY
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise InputError(f"cannot read the taxonomy {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    entries = data.get("types") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(f'{path}: expected {{"types": [{{"name": ..., "description": ...}}, ...]}}')
    types = [_edit_type(entry, number, path) for number, entry in enumerate(entries, 1)]
    names = [t.name for t in types]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"{path}: edit type {repeated[0]!r} is defined twice")
    return Taxonomy(tuple(types), hashlib.sha256(raw).hexdigest()[:12])


def _edit_type(entry: Any, number: int, path: str) -> EditType:
    where = f"{path}: type {number}"
    if not isinstance(entry, dict):
        raise InputError(f"{where} must be an object with a name and a description")
    name, description = entry.get("name"), entry.get("description")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(f"{where}: 'name' must be lower-case letters, digits and '_', got {name!r}")
    if not isinstance(description, str) or not description.strip():
        raise InputError(f"{where} ({name}): 'description' must be a non-empty string")
    phrases = entry.get("phrases", [])
    if not isinstance(phrases, list) or not all(isinstance(p, str) and p.strip() for p in phrases):
        raise InputError(f"{where} ({name}): 'phrases' must be a list of non-empty strings")
    category = entry.get("category", "")
    return EditType(name, " ".join(description.split()), str(category), tuple(phrases))
