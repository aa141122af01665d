"""Keys that never reach a message: ``Secret`` hides a value from ``repr``; ``redact`` removes it (and masked
echoes of it) from any text a server sends back."""

from __future__ import annotations

import re
from typing import Optional, Sequence

REDACTED = "***"


class Secret:
    """A value that must not be printed: ``repr`` and ``str`` show ``***``; ``reveal()`` gives it back."""

    __slots__ = ("_value",)

    def __init__(self, value: Optional[str]):
        self._value = value or ""

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})" if self._value else "Secret('')"

    __str__ = __repr__

    def __reduce__(self):  # engines pickle servings into workers; the key goes with them, in memory only
        return (Secret, (self._value,))


_MASKED = re.compile(r"[^\s\"']*\*{3,}[^\s\"']*")


def redact(text: str, secrets: Sequence[Secret]) -> str:
    """``text`` with every secret's value replaced by ``***``, and masked echoes of it too: servers answer a
    bad key with ``sk-ab****wxyz``, which still gives away its ends."""
    for secret in secrets:
        if secret:
            value = secret.reveal()
            text = text.replace(value, REDACTED)
            text = _MASKED.sub(lambda m: _mask_echo(m.group(0), value), text)
    return text


def _mask_echo(token: str, value: str) -> str:
    """``***`` for a token like ``abc****xyz.`` that shows at least 3 characters of either end of ``value``
    (trailing punctuation kept); the token itself otherwise."""
    word = token.rstrip(".,;:)")
    head, _, tail = word.partition("***")
    head, tail = head.rstrip("*"), tail.lstrip("*")
    if (len(head) >= 3 and value.startswith(head)) or (len(tail) >= 3 and value.endswith(tail)):
        return REDACTED + token[len(word):]
    return token
