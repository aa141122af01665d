"""One HTTP client for every remote API: retries, backoff, ``Retry-After``, error classes, key hygiene.

Nothing here knows an API's request shapes; the image-edit formats (``openai_format``, ``gemini_format``) and any
later OpenAI-compatible caller (a VLM judge on ``/v1/chat/completions``) build their requests and read their
answers, and share what happens in between:

- 429, 408, 5xx, timeouts and connection errors are retried with exponential backoff and jitter, waiting what a
  ``Retry-After`` (or ``retry-after-ms``) header asks when there is one;
- 401/403 raise ``Unauthorized`` and 404 ``NotFound`` (both ``ServiceError``: every request would fail alike);
- any other 4xx raises ``Rejected`` (that request alone), carrying the API's own JSON error;
- the key travels only in headers the caller passes per request, is never part of a message, and any echo of it
  in a server's answer is replaced by ``***``.
"""

from __future__ import annotations

import email.utils
import functools
import json
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

from dataflow.core.errors import InputError, ServiceError
from dataflow.logger import get_logger

logger = get_logger()

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600)) - {501, 505}
REDACTED = "***"


# -- secrets and safe text ---------------------------------------------------------------------------------
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


def safe_url(url: Any) -> str:
    """The URL without user info, query or fragment: what messages and fingerprints may show."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_base_url(url: str) -> str:
    """``url`` without a trailing slash; ``InputError`` if it is not http(s) or carries a key in its query or
    user info (keys belong in ``DF_API_KEY``, never in a URL that reaches logs and step files)."""
    if not isinstance(url, str) or not url.strip():
        raise InputError(f"api_url must be an http(s) URL, got {url!r}")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"api_url must start with http:// or https:// and name a host, got {safe_url(url)!r}")
    if parts.query or parts.username or parts.password:
        raise InputError("api_url must not carry a query string or user info; pass the API key in DF_API_KEY "
                         f"(or api_key=...) instead: {safe_url(url)}")
    return url.rstrip("/")


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


# -- errors ------------------------------------------------------------------------------------------------
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


# -- retries -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait between attempts.

    Args:
        max_retries: retries after the first attempt (0: none).
        base_delay: the first backoff in seconds; it doubles each retry, capped at ``max_delay``, with jitter.
        max_delay: the longest backoff.
        max_retry_after: the longest ``Retry-After`` obeyed; a server asking for more fails the request at once
            (a spent quota, not a moment of overload).
    """

    max_retries: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = 120.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number ``retry`` (0-based): half the exponential delay plus up to half again."""
        delay = min(self.max_delay, self.base_delay * 2**retry)
        return delay / 2 + rng.uniform(0, delay / 2)


def retry_after_seconds(headers: Any, now: Optional[float] = None) -> Optional[float]:
    """Seconds a response asks to wait: ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# -- counters ----------------------------------------------------------------------------------------------
class Counters:
    """Thread-safe sums: requests, retries, and whatever numbers an API reports (token usage)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[str, float] = {}

    def add(self, name: str, amount: float = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + amount

    def add_usage(self, usage: Any, prefix: str = "") -> None:
        """Sum every number of a usage object; nested objects are flattened as ``a.b``, and Gemini's lists of
        ``{"modality": ..., "tokenCount": ...}`` as ``name.MODALITY``."""
        if not isinstance(usage, dict):
            return
        for key, value in usage.items():
            name = f"{prefix}{key}"
            if isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                self.add(name, value)
            elif isinstance(value, dict):
                self.add_usage(value, name + ".")
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, dict) and "modality" in item and isinstance(item.get("tokenCount"), int):
                        self.add(f"{name}.{item['modality']}", item["tokenCount"])

    def snapshot(self) -> dict:
        with self._lock:
            return {k: int(v) if float(v).is_integer() else v for k, v in self._values.items()}


@dataclass
class _Failure:
    """An attempt worth retrying: what happened, and how long the server asked to wait."""

    text: str
    status: Optional[int] = None
    payload: Any = None
    wait: Optional[float] = None
    connect_failed: bool = False


def import_httpx() -> Any:
    """httpx, or an ``InputError`` saying how to install it."""
    try:
        import httpx
    except ImportError:
        raise InputError('the API backend needs httpx: pip install -e ".[api]" (or pip install httpx)') from None
    return httpx


@functools.lru_cache(maxsize=1)
def default_ssl_context() -> Any:
    """httpx's default (verifying) SSL context, built once per process: building one takes a tenth of a second,
    and every client (a serving's, a check's, a worker's) can share it."""
    return import_httpx().create_ssl_context()


# -- the client --------------------------------------------------------------------------------------------
class HTTPClient:
    """An ``httpx.Client`` shared by every thread of a run, with retries and safe error messages.

    Args:
        timeout: seconds to wait for a response (read, write and pool).
        connect_timeout: seconds to wait for a connection.
        max_connections: connection pool size; the most requests in flight at once.
        retry: the ``RetryPolicy``.
        secrets: values redacted from every message built here (the API key).
        sleep: how to wait between attempts (tests pass a fake).
    """

    def __init__(self, timeout: float = 300, connect_timeout: float = 30, max_connections: int = 8,
                 retry: Optional[RetryPolicy] = None, secrets: Sequence[Secret] = (),
                 sleep: Callable[[float], None] = time.sleep, counters: Optional[Counters] = None):
        httpx = import_httpx()
        self._httpx = httpx
        self.retry = retry or RetryPolicy()
        self.secrets = tuple(secrets)
        self.sleep = sleep
        self.counters = counters or Counters()
        self._rng = random.Random()
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=False,
            verify=default_ssl_context(),
        )

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, url: str, *, headers: Optional[dict] = None, json: Any = None,
                data: Optional[dict] = None, files: Any = None, follow_redirects: bool = False) -> Any:
        """Send a request, retrying what is worth retrying; return the 2xx ``httpx.Response``.

        Raises ``Unauthorized``/``NotFound`` (stop the run), ``Unreachable`` (no connection after every retry),
        ``Rejected`` (another 4xx) or ``RequestFailed`` (retries exhausted, or a wait longer than the policy's).
        """
        where = f"{method} {safe_url(url)}"
        send = dict(headers=headers, json=json, data=data, files=files, follow_redirects=follow_redirects)
        retries = self.retry.max_retries
        for attempt in range(retries + 1):
            if attempt:
                self.counters.add("retries")
            self.counters.add("requests")
            outcome = self._attempt(method, url, where, send)
            if not isinstance(outcome, _Failure):
                return outcome
            if outcome.wait is not None and outcome.wait > self.retry.max_retry_after:
                raise RequestFailed(
                    f"{where}: {outcome.text}; the server asks to wait {outcome.wait:.0f} s (Retry-After), more "
                    f"than the {self.retry.max_retry_after:.0f} s this run waits", outcome.status, outcome.payload)
            if attempt == retries:
                break
            delay = outcome.wait if outcome.wait is not None else self.retry.backoff(attempt, self._rng)
            logger.debug("%s: %s; retry %d of %d in %.2f s", where, outcome.text, attempt + 1, retries, delay)
            self.sleep(delay)
        message = (f"{where}: gave up after {retries + 1} attempt{'s' if retries else ''} ({retries} "
                   f"retr{'ies' if retries != 1 else 'y'}); last: {outcome.text}")
        if outcome.connect_failed:
            raise Unreachable(message)
        raise RequestFailed(message, outcome.status, outcome.payload)

    def _attempt(self, method: str, url: str, where: str, send: dict) -> Any:
        """One attempt: the 2xx response, a ``_Failure`` worth retrying, or an exception that ends the request."""
        httpx = self._httpx
        try:
            response = self._client.request(method, url, **send)
        except httpx.UnsupportedProtocol as exc:
            raise Unreachable(self._safe(f"cannot send {where}: {exc}")) from None
        except httpx.ConnectError as exc:
            return _Failure(f"cannot connect: {self._safe(str(exc)) or type(exc).__name__}", connect_failed=True)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            detail = self._safe(str(exc))
            return _Failure(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__)
        if response.status_code < 400:
            return response
        return self._classify(response, where)

    def _classify(self, response: Any, where: str) -> "_Failure":
        """A ``_Failure`` for a retryable status; otherwise raise what the status means."""
        status = response.status_code
        text = self._safe(api_message(response))
        described = f"HTTP {status}: {text}" if text else f"HTTP {status}"
        payload = json_or_none(response)
        if status in (401, 403):
            raise Unauthorized(f"{where} answered {described}", status)
        if status == 404:
            raise NotFound(f"{where} answered {described}")
        if status == 429 and error_code(payload) == "insufficient_quota":
            raise ServiceError(f"{where} answered {described} (the account's quota is spent)")
        if status not in RETRYABLE_STATUSES:
            raise Rejected(f"{where} answered {described}", status, payload)
        return _Failure(described, status, payload, retry_after_seconds(response.headers))

    def _safe(self, text: str) -> str:
        return redact(text, self.secrets)


class SharedClient:
    """The one ``HTTPClient`` of a serving or a metric, and the key and counters that go with it.

    The client is made on first use behind a lock, so every thread of a run shares one connection pool; a pickled
    owner (an engine's worker) travels without it and makes its own; ``checker`` is a lighter client for dry runs.

    Args:
        api_key: sent by the owner in its own headers; redacted from every message (none when empty).
        timeout, connect_timeout: seconds to wait for an answer and for a connection.
        max_connections: requests in flight at once.
        retry: the ``RetryPolicy``.
    """

    def __init__(self, api_key: Optional[str], timeout: float, connect_timeout: float, max_connections: int,
                 retry: RetryPolicy):
        self.key = Secret(api_key)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_connections = max_connections
        self.retry = retry
        self.counters = Counters()
        self._lock = threading.Lock()
        self._client: Optional[HTTPClient] = None

    def get(self) -> HTTPClient:
        with self._lock:
            if self._client is None:
                self._client = HTTPClient(self.timeout, self.connect_timeout, self.max_connections, self.retry,
                                          secrets=(self.key,), counters=self.counters)
            return self._client

    def checker(self) -> HTTPClient:
        """A one-connection client with at most 2 retries, for reaching the server without working."""
        retry = RetryPolicy(max_retries=min(self.retry.max_retries, 2), base_delay=self.retry.base_delay)
        return HTTPClient(self.timeout, self.connect_timeout, 1, retry, secrets=(self.key,), counters=self.counters)

    def usage(self, first: Sequence[str]) -> dict:
        """The counters: the names in ``first`` (0 when unseen) in that order, then what the API reported."""
        reported = self.counters.snapshot()
        counts = {name: reported.pop(name, 0) for name in first}
        return {**counts, **dict(sorted(reported.items()))}

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_client=None, _lock=None, counters=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self.counters = Counters()
