"""Quoting user-supplied text in messages and reports without copying all of it.

An input field can be megabytes long (a 10 MB instruction); an error message, a progress file line or a gallery
cell holds its start and its length instead.
"""

from __future__ import annotations

PREVIEW_CHARS = 200


def shorten(text: str, limit: int = PREVIEW_CHARS) -> str:
    """``text`` itself when it has at most ``limit`` characters, else its first ``limit`` characters, an ellipsis
    and its length: ``'make it brighter, make it…' (1,800,000 characters)``."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"
