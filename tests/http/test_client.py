"""The shared HTTP client: retries, backoff, Retry-After, error classes and key hygiene, against a real server."""

import random
import socket
import time

import numpy as np
import pytest

from dataflow.core.errors import InputError, ServiceError
from dataflow.http import (
    HTTPClient,
    NotFound,
    Rejected,
    RequestFailed,
    RetryPolicy,
    Secret,
    Unauthorized,
    Unreachable,
    check_base_url,
    redact,
    retry_after_seconds,
    safe_url,
)
from dataflow.serving.api.openai_format import OpenAIEditFormat
from dataflow.serving.api.upload import Upload
from tests.serving.api.server import MODEL, png_bytes

IMAGE = Upload(png_bytes(np.zeros((4, 4, 3), dtype=np.uint8)), "image/png")


def client(max_retries=3, timeout=5.0, sleeps=None, **policy):
    waits = [] if sleeps is None else sleeps
    return HTTPClient(timeout=timeout, connect_timeout=2, max_connections=4,
                      retry=RetryPolicy(max_retries=max_retries, **policy), secrets=(Secret("test-key"),),
                      sleep=waits.append), waits


def post(http, server, prompt, key="test-key"):
    call = OpenAIEditFormat(server.url, MODEL).edit_call([IMAGE], prompt, 1)
    return http.request(call.method, call.url, headers={"Authorization": f"Bearer {key}"}, data=call.data,
                        files=call.files)


def test_retry_after_in_seconds_milliseconds_or_an_http_date():
    assert retry_after_seconds({"retry-after": "3"}) == 3
    assert retry_after_seconds({"retry-after": "0.5"}) == 0.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    now = time.time()
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 30))
    assert retry_after_seconds({"retry-after": date}, now=now) == pytest.approx(30, abs=1)
    assert retry_after_seconds({"retry-after": "Mon, 01 Jan 2001 00:00:00 GMT"}) == 0  # in the past
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_backoff_doubles_with_jitter_and_a_cap():
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    rng = random.Random(0)
    for retry, full in [(0, 1), (1, 2), (2, 4), (3, 8), (6, 8)]:
        waits = [policy.backoff(retry, rng) for _ in range(50)]
        assert all(full / 2 <= w <= full for w in waits) and len(set(waits)) > 1


def test_429_waits_what_retry_after_says_then_succeeds(edit_server):
    http, waits = client()
    edit_server.retry_after = "2"
    edit_server.inject("p", "429", "500")
    response = post(http, edit_server, "p")
    assert response.status_code == 200 and response.json()["data"][0]["b64_json"]
    assert waits[0] == 2  # Retry-After honoured; the 500, as the second retry, got a backoff in [1, 2]
    assert 1 <= waits[1] <= 2
    sent = http.counters.snapshot()
    assert sent.pop("request_bytes") > 3 * len(IMAGE.data)  # every attempt's body counts
    assert sent == {"requests": 3, "retries": 2}


def test_an_http_date_retry_after_is_honoured(edit_server):
    http, waits = client()
    edit_server.inject("p", "429-date")
    assert post(http, edit_server, "p").status_code == 200
    assert 0 <= waits[0] <= 1.5


def test_a_retry_after_longer_than_the_cap_fails_at_once(edit_server):
    http, waits = client(max_retry_after=0.5)
    edit_server.retry_after = "3600"
    edit_server.inject("p", "429")
    with pytest.raises(RequestFailed, match="asks to wait 3600 s") as info:
        post(http, edit_server, "p")
    assert info.value.status == 429 and waits == [] and len(edit_server.edits()) == 1


def test_retries_exhausted_name_the_count_and_the_last_status(edit_server):
    http, waits = client(max_retries=2)
    edit_server.inject("p", "503", "500", "500")
    with pytest.raises(RequestFailed, match=r"gave up after 3 attempts \(2 retries\); last: HTTP 500") as info:
        post(http, edit_server, "p")
    assert info.value.status == 500 and len(waits) == 2 and len(edit_server.edits()) == 3


def test_timeouts_and_dropped_connections_are_retried(edit_server):
    http, _ = client(timeout=0.3)
    edit_server.slow_seconds = 0.8
    edit_server.inject("p", "slow", "drop")
    assert post(http, edit_server, "p").status_code == 200
    assert [r.status for r in edit_server.edits()][1:] == [0, 200]
    http, _ = client(max_retries=0, timeout=0.3)
    edit_server.inject("q", "slow")
    with pytest.raises(RequestFailed, match="ReadTimeout"):
        post(http, edit_server, "q")


def test_401_404_and_other_4xx_are_not_retried(edit_server):
    http, waits = client()
    with pytest.raises(Unauthorized, match="HTTP 401") as info:
        post(http, edit_server, "p", key="wrong-key-987654")
    assert isinstance(info.value, ServiceError) and info.value.status == 401
    assert "987654" not in str(info.value)  # the server's masked echo of the key is redacted too
    with pytest.raises(Rejected, match="HTTP 400: Invalid value") as info:
        post(http, edit_server, "BADREQ")
    assert info.value.payload["error"]["code"] == "invalid_value"
    edit_server.models = set()
    with pytest.raises(NotFound, match="HTTP 404"):
        post(http, edit_server, "p")
    assert waits == [] and len(edit_server.edits()) == 3


def test_no_connection_after_every_retry_is_unreachable():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    http, waits = client(max_retries=2)
    with pytest.raises(Unreachable, match=r"gave up after 3 attempts.*cannot connect"):
        http.request("GET", f"http://127.0.0.1:{port}/v1/models")
    assert len(waits) == 2


def test_secrets_never_show_in_repr_or_messages():
    secret = Secret("sk-live-abcdef0123456789")
    assert "abcdef" not in repr(secret) and "abcdef" not in str(secret) and secret.reveal().endswith("6789")
    assert redact("key sk-live-abcdef0123456789 here", [secret]) == "key *** here"
    assert redact("Incorrect API key provided: sk-li****6789.", [secret]) == "Incorrect API key provided: ***."
    assert redact("a mask **** of something else", [secret]) == "a mask **** of something else"
    assert safe_url("https://user:pw@host:8443/v1/x?key=secret#f") == "https://host:8443/v1/x"


def test_urls_with_a_key_in_them_are_refused():
    with pytest.raises(InputError, match="DF_API_KEY"):
        check_base_url("https://generativelanguage.googleapis.com/v1beta?key=AIza123")
    with pytest.raises(InputError, match="DF_API_KEY"):
        check_base_url("https://me:sk-123@api.example.com/v1")
    with pytest.raises(InputError, match="http"):
        check_base_url("api.openai.com/v1")
    assert check_base_url(" https://api.openai.com/v1/ ") == "https://api.openai.com/v1"
