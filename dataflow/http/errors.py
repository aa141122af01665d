"""How a request fails: the error classes callers tell apart, and the API's own words for an error."""

from __future__ import annotations

import json
from typing import Any, Optional

from dataflow.core.errors import ServiceError


def api_message(response: Any, limit: int = 500) -> str:
    """The API's own words for an error: ``error.message`` (OpenAI, Gemini), ``detail`` or ``message`` (FastAPI
    style servers), else the start of the body."""
    payload = json_or_none(response)
    text = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            text = error.get("message")
        elif isinstance(error, str):
            text = error
        if not text:
            text = payload.get("detail") or payload.get("message")
    if not isinstance(text, str) or not text.strip():
        text = response.text if payload is None else json.dumps(payload)
    text = " ".join(str(text).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def error_code(payload: Any) -> Optional[str]:
    """``error.code`` (or ``error.status``) of a JSON error body, as a string."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None
    code = error.get("code") or error.get("status")
    return None if code is None else str(code)


def json_or_none(response: Any) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


class RequestFailed(Exception):
    """One request failed for good (retries exhausted, or a 4xx); the caller fails that unit of work alone.

    Args:
        message: what happened, safe to show (no key, no headers).
        status: the last HTTP status, if a response came back.
        payload: the last response's JSON body, if it had one.
    """

    def __init__(self, message: str, status: Optional[int] = None, payload: Any = None):
        super().__init__(message)
        self.status = status
        self.payload = payload


class Rejected(RequestFailed):
    """A 4xx other than 401/403/404: the request itself was refused; retrying would not help."""


class Unauthorized(ServiceError):
    """401 or 403: the key is missing, wrong, or lacks access."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class NotFound(ServiceError):
    """404: a wrong URL or model name."""

    status = 404


class Unreachable(ServiceError):
    """No connection could be made, even after every retry."""
