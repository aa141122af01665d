"""When to retry a request and how long to wait: exponential backoff with jitter, and ``Retry-After``."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Any, Optional

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600)) - {501, 505}


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
