"""Reading one input row: its reference image path, its instruction, and its identity.

Rows follow the DataFlow-MM layout::

    {"images": "photo.png", "conversations": [{"role": "user", "content": "Change the vase to red."}]}

``images`` is a path or a list of paths, relative to the input file's folder or absolute; rows read from a
dataset (``dataflow.io.sources``) hold references to the images embedded in its shards, which travel as paths do.
The instruction is the last user message of the conversation, or the field itself when it is plain text (as a
WebDataset ``.txt`` member or an ``instruction`` column is).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Mapping

from dataflow.core.errors import RowError
from dataflow.core.reference import content_id

_USER_ROLES = {"user", "human"}
ID_FIELDS = ("id", "__key__")


def image_paths(row: Mapping[str, Any], key: str, base_dir: str) -> list[str]:
    """The row's reference images as paths, in order, each resolved against ``base_dir`` when relative.

    ``images`` is one path or a list of paths (several for backends that edit from more than one image).
    """
    value = _field(row, key)
    if isinstance(value, (list, tuple)):
        if not value:
            raise RowError(f"'{key}' is an empty list; it must hold at least one image path")
        return [_one_path(v, f"'{key}' item {i + 1}" if len(value) > 1 else f"'{key}'", base_dir)
                for i, v in enumerate(value)]
    return [_one_path(value, f"'{key}'", base_dir)]


def edited_paths(row: Mapping[str, Any], key: str, base_dir: str) -> list[str]:
    """The row's edited images (its ``output_image`` list, as a run wrote it), resolved against ``base_dir``."""
    value = _field(row, key)
    if is_missing(value):
        raise RowError(f"'{key}' is missing or null: this row has no edited images to score")
    values = value if isinstance(value, (list, tuple)) else [value]
    return [_one_path(v, f"'{key}' item {i + 1}", base_dir) for i, v in enumerate(values)]


def image_path(row: Mapping[str, Any], key: str, base_dir: str) -> str:
    """The row's first reference image as a path (the one its output's shape follows)."""
    return image_paths(row, key, base_dir)[0]


def _field(row: Mapping[str, Any], key: str) -> Any:
    """``row[key]``; ``RowError`` naming the fields the row does have when it has no such field at all."""
    if key not in row:
        fields = ", ".join(map(str, list(row)[:12])) + (", ..." if len(row) > 12 else "")
        raise RowError(f"the row has no field '{key}' (its fields: {fields or 'none'})")
    return row[key]


def _one_path(value: Any, what: str, base_dir: str) -> str:
    if is_missing(value):
        raise RowError(f"{what} is missing or null")
    if not isinstance(value, str):
        raise RowError(f"{what} must be a path string or a list of them, got {type(value).__name__}")
    if not value.strip():
        raise RowError(f"{what} is an empty string")
    path = os.path.expanduser(value)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def instruction(row: Mapping[str, Any], key: str) -> str:
    """The last user message of the row's conversation (or the field's text, when it is a string), stripped."""
    conversation = _field(row, key)
    if is_missing(conversation):
        raise RowError(f"'{key}' is missing or null")
    if isinstance(conversation, str):
        return _clean_text(conversation, f"'{key}'")
    try:
        messages = list(conversation)
    except TypeError:
        raise RowError(f"'{key}' must be a list of messages, got {type(conversation).__name__}") from None
    if not messages:
        raise RowError(f"'{key}' is empty")
    for message in reversed(messages):
        if not isinstance(message, Mapping):
            raise RowError(f"'{key}' holds a {type(message).__name__} where a message object was expected")
        role = message.get("role", message.get("from"))
        if role in _USER_ROLES:
            return _message_text(message, key)
    raise RowError(f"'{key}' has no user message")


def earlier_turns(row: Mapping[str, Any], key: str) -> list[str]:
    """The user messages of the conversation before its last one, in order, each stripped (none when the field
    is plain text); for editing turn by turn. A user message without text is a ``RowError`` naming it."""
    conversation = _field(row, key)
    if isinstance(conversation, str):
        return []
    instruction(row, key)  # the conversation's own problems are said as always
    users = []
    for message in conversation:
        if not isinstance(message, Mapping):
            raise RowError(f"'{key}' holds a {type(message).__name__} where a message object was expected")
        if message.get("role", message.get("from")) in _USER_ROLES:
            users.append(message)
    return [_message_text(m, key, f"user message {n}") for n, m in enumerate(users[:-1], 1)]


def row_key(row: Mapping[str, Any], image_key: str, conversation_key: str) -> str:
    """A stable identity: the ``id`` field (or a WebDataset sample's ``__key__``) if present, else a hash of the
    image value and the conversation, where an embedded image counts by its content's digest, not its place."""
    for name in ID_FIELDS:
        row_id = row.get(name)
        if not is_missing(row_id) and not isinstance(row_id, (dict, list)):
            return f"id:{row_id}"
    payload = json.dumps([_identity_of(row.get(image_key)), row.get(conversation_key)], sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def _identity_of(images: Any) -> Any:
    """The image value with each reference replaced by its content id (plain paths, as before, unchanged)."""
    if isinstance(images, (list, tuple)):
        return [_identity_of(v) for v in images] if any(content_id(v) for v in images) else images
    return content_id(images) or images


def _message_text(message: Mapping[str, Any], key: str, which: str = "the last user message") -> str:
    content = message.get("content", message.get("value"))
    if isinstance(content, list):  # OpenAI-style parts: [{"type": "text", "text": "..."}, {"type": "image"}]
        parts = [p.get("text") for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
        if not parts or not all(isinstance(p, str) for p in parts):
            raise RowError(f"{which} in '{key}' must be a string or a list of text parts")
        content = " ".join(parts)
    if is_missing(content):
        raise RowError(f"{which} in '{key}' has no content")
    if not isinstance(content, str):
        raise RowError(f"{which} in '{key}' must be a string, got {type(content).__name__}")
    return _clean_text(content, f"{which} in '{key}'")


def _clean_text(content: str, what: str) -> str:
    text = content.replace("<image>", " ").strip()
    if not text:
        raise RowError(f"{what} is empty")
    return " ".join(text.split())


def is_missing(value: Any) -> bool:
    """None, or the NaN that pandas puts in an empty cell."""
    return value is None or (isinstance(value, float) and math.isnan(value))
