"""One HTTP client for every remote API: retries, backoff, ``Retry-After``, error classes, key hygiene.

Nothing here knows an API's request shapes; the image-edit formats (``openai_format``, ``gemini_format``) and any
later OpenAI-compatible caller (a VLM judge on ``/v1/chat/completions``) build their requests and read their
answers, and share what happens in between:

- 429, 408, 5xx, timeouts and connection errors are retried with exponential backoff and jitter, waiting what a
  ``Retry-After`` (or ``retry-after-ms``) header asks when there is one;
- 401/403 raise ``Unauthorized`` and 404 ``NotFound`` (both ``ServiceError``: every request would fail alike); a
  404 or 400 saying the model does not exist raises ``ModelNotFound`` (a ``NotFound``);
- any other 4xx raises ``Rejected`` (that request alone), carrying the API's own JSON error;
- the key travels only in headers the caller passes per request, is never part of a message, and any echo of it
  in a server's answer is replaced by ``***``;
- the bytes of every request sent (its ``Content-Length``, retries included) are summed as ``request_bytes``.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from dataflow.core.errors import InputError, ServiceError
from dataflow.http.errors import (
    ModelNotFound,
    NotFound,
    Rejected,
    RequestFailed,
    Unauthorized,
    Unreachable,
    api_message,
    error_code,
    json_or_none,
    says_model_missing,
)
from dataflow.http.retry import RETRYABLE_STATUSES, RetryPolicy, retry_after_seconds
from dataflow.http.secrets import Secret, redact
from dataflow.http.urls import safe_url
from dataflow.logger import get_logger

logger = get_logger()


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
            event_hooks={"request": [self._count_bytes]},
        )

    def _count_bytes(self, request: Any) -> None:
        """Sum what each attempt sends (a body's declared length; 0 for a GET)."""
        length = request.headers.get("content-length")
        if length and length.isdigit():
            self.counters.add("request_bytes", int(length))

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
        if status in (400, 404) and says_model_missing(payload, text):
            raise ModelNotFound(f"{where} answered {described}", status, described)
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
