"""What the image-edit request formats share: a request to send, an answer read back, and the ways a row fails.

A format (``OpenAIEditFormat``, ``GeminiEditFormat``) turns one row's reference images and instruction into an
``EditCall`` and reads the JSON answer into an ``EditAnswer``. It never sends anything itself; ``APIEditServing``
sends through the shared ``HTTPClient``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class EditCall:
    """One HTTP request: JSON (``json``) or multipart (``data`` fields and ``files`` parts)."""

    method: str
    url: str
    json: Any = None
    data: Optional[dict] = None
    files: Optional[list] = None


@dataclass
class EditAnswer:
    """A successful answer: image bytes, or URLs to fetch them from."""

    images: list = field(default_factory=list)


class AnswerError(Exception):
    """The row's request got no usable image; the message carries the API's or the model's own words.

    ``refusal`` marks a safety or content-policy refusal (counted apart, never retried).
    """

    def __init__(self, message: str, refusal: bool = False):
        super().__init__(message)
        self.refusal = refusal


def decode_base64(data: Any, what: str) -> bytes:
    """Bytes of a base64 string; ``AnswerError`` naming ``what`` if it is not one."""
    if not isinstance(data, str) or not data:
        raise AnswerError(f"the response's {what} holds no base64 data")
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise AnswerError(f"the response's {what} is not valid base64: {exc}") from None


def field_value(value: Any) -> str:
    """A multipart form field: strings as they are, booleans as true/false, numbers as text, the rest as JSON."""
    import json

    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value)


def short(text: Any, limit: int = 300) -> str:
    """One line of at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text[:limit] + ("..." if len(text) > limit else "")
