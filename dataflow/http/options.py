"""Checks of the options every remote call shares: timeouts, and the extra JSON fields a user adds to a request."""

from __future__ import annotations

import json
from typing import Any

from dataflow.core.errors import InputError


def check_seconds(**values: Any) -> None:
    """``InputError`` naming the first value that is not a positive number of seconds."""
    for name, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise InputError(f"{name} must be a positive number of seconds, got {value!r}")


def check_extra_body(extra_body: Any, reserved: frozenset) -> dict:
    """A copy of ``extra_body``: a JSON object whose keys are not set by the serving itself."""
    if extra_body is None:
        return {}
    if not isinstance(extra_body, dict) or not all(isinstance(k, str) for k in extra_body):
        raise InputError(f"extra_body must be a JSON object (a dict with string keys), got {extra_body!r}")
    clash = sorted(set(extra_body) & reserved)
    if clash:
        raise InputError(f"extra_body must not set {', '.join(clash)}: the serving's own arguments do")
    try:
        json.dumps(extra_body)
    except (TypeError, ValueError) as exc:
        raise InputError(f"extra_body must be JSON-serialisable: {exc}") from None
    return dict(extra_body)
