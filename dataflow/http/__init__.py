"""The HTTP layer every remote call shares: the API editing backend, the API judge, and any later OpenAI-compatible
caller. ``client`` (a pooled ``httpx`` client with retries, and ``SharedClient``, made lazily and pickled into
workers without its connections), ``retry`` (backoff, ``Retry-After``), ``errors`` (what failed and the API's own
words), ``secrets`` (keys never shown), ``urls`` (base URLs checked and rooted), ``options`` (timeouts, extra
fields). Nothing here knows a request's shape. Needs the ``[api]`` extra (httpx) to send anything.
"""

from dataflow.http.client import (
    Counters,
    HTTPClient,
    SharedClient,
    default_ssl_context,
    import_httpx,
)
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
from dataflow.http.options import check_extra_body, check_seconds
from dataflow.http.retry import RETRYABLE_STATUSES, RetryPolicy, retry_after_seconds
from dataflow.http.secrets import REDACTED, Secret, redact
from dataflow.http.urls import api_root, check_base_url, safe_url

__all__ = [
    "Counters", "HTTPClient", "SharedClient", "default_ssl_context", "import_httpx",
    "ModelNotFound", "NotFound", "Rejected", "RequestFailed", "Unauthorized", "Unreachable", "api_message",
    "error_code", "json_or_none", "says_model_missing", "check_extra_body", "check_seconds", "RETRYABLE_STATUSES",
    "RetryPolicy", "retry_after_seconds", "REDACTED", "Secret", "redact", "api_root", "check_base_url", "safe_url",
]
