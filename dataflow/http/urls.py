"""Base URLs of remote APIs: checked (http(s), no key in them), shown safely, and rooted at their version."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dataflow.core.errors import InputError

_VERSION_SEGMENT = re.compile(r"/v\d+[a-z0-9]*(/|$)")

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


def api_root(url: str, endpoints: tuple = ()) -> str:
    """The API root with its version segment: ``/v1`` is added when the URL has none, never doubled.

    ``https://api.openai.com/v1`` and ``http://host:8000`` give ``.../v1``; a URL ending in one of ``endpoints``
    (``.../v1/chat/completions``) is cut back to its root; other versioned roots (``.../v1beta/openai``) are kept.
    """
    url = check_base_url(url)
    for endpoint in endpoints:
        if url.endswith(endpoint):
            url = url[: -len(endpoint)]
    if not _VERSION_SEGMENT.search(urlsplit(url).path):
        url += "/v1"
    return url
