"""How a request fails: the error classes callers tell apart, and the API's own words for an error."""

from __future__ import annotations

import json
import re
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


# "The model `x` does not exist", "models/x is not found for API version v1beta", "model 'x' not found"
_MODEL_MISSING = re.compile(r"\bmodels?\b.{0,200}?\b(does not exist|is not found|not found|no longer available|"
                            r"has been (shut down|retired|deprecated))", re.I | re.S)
MODEL_MISSING_CODES = frozenset({"model_not_found"})


def says_model_missing(payload: Any, text: str = "") -> bool:
    """Whether an error body says that the requested model does not exist: OpenAI's ``model_not_found`` code,
    or the words of OpenAI, Gemini and vLLM ("The model `x` does not exist", "models/x is not found")."""
    if error_code(payload) in MODEL_MISSING_CODES:
        return True
    return bool(_MODEL_MISSING.search(text))


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


class ModelNotFound(NotFound):
    """A 404 or 400 whose body says the model does not exist (a retired or misspelt model name): every request
    would fail alike."""

    def __init__(self, message: str, status: int = 404, detail: str = ""):
        super().__init__(message)
        self.status = status
        self.detail = detail  # "HTTP 404: <the API's words>"


class Unreachable(ServiceError):
    """No connection could be made, even after every retry."""
