"""``APIJudge``: a VLM judge behind any OpenAI-compatible ``POST {base}/chat/completions`` (vLLM, SGLang, a cloud
model), one request per item, sent through the shared ``HTTPClient`` (retries, backoff, key hygiene).

The engine runs up to ``concurrency`` (``max_concurrency``) ``score`` calls at once from threads; ``score`` is
thread-safe: the client (one ``httpx.Client``) is shared and the counters sit behind a lock.
"""

from __future__ import annotations

import base64
from typing import Any, Optional, Sequence

from dataflow.core.errors import InputError, ModelLoadError, ServiceError
from dataflow.core.validation import check_positive_int
from dataflow.http import (
    HTTPClient,
    NotFound,
    RequestFailed,
    RetryPolicy,
    SharedClient,
    Unauthorized,
    json_or_none,
    redact,
)
from dataflow.http.options import check_extra_body, check_seconds
from dataflow.http.urls import api_root
from dataflow.operators.core_vision.eval.metric import Metric, ScoreItem, ScoreResult
from dataflow.operators.core_vision.eval.metrics.images import source_and_edit
from dataflow.operators.core_vision.eval.metrics.judge import (
    NAME,
    judge_prompt,
    judgement,
    prompt_version,
)

KEY_VARIABLE = "DF_API_KEY"
ENDPOINT = "/chat/completions"
RESERVED_FIELDS = frozenset({"model", "messages", "temperature", "max_tokens"})


def chat_base_url(url: str) -> str:
    """The API root with its version segment (``api_root``'s rule: ``/v1`` added when absent, never doubled); a
    URL naming the endpoint itself (``.../v1/chat/completions``) is cut back to its root."""
    return api_root(url, (ENDPOINT,))


def data_url(image: Any) -> str:
    """A PNG data URL of a PIL image."""
    from dataflow.io.image_io import encode_png

    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def answer_text(payload: Any) -> Optional[str]:
    """``choices[0].message.content``: a string, or the text parts of a list of parts; None if absent."""
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        content = "".join(texts) if texts else None
    return content if isinstance(content, str) else None


class APIJudge(Metric):
    """Judge edits with a VLM served by an OpenAI-compatible chat completions API.

    Each item is one request: a user message holding the source (the item's first source) and the edit as
    ``image_url`` parts (PNG data URLs), in that order, then the judge's prompt; ``temperature`` 0. Values:
    ``sc``, ``pq``, ``overall``, ``reason`` (see ``judge``). An answer without both scores, a 4xx other than
    401/403/404, and retries exhausted are that item's error; 401/403/404 raise ``ServiceError``.

    Args:
        api_url: the API root, with or without ``/v1`` (``http://host:8000``, ``https://api.openai.com/v1``).
        model: the model name the server knows (vLLM's ``--served-model-name``).
        api_key: sent as ``Authorization: Bearer``; none when empty (self-hosted servers).
        max_concurrency: requests in flight at once (``score`` calls the engine may run from threads).
        max_tokens: the longest answer.
        max_retries, timeout, connect_timeout, retry_delay: as for ``APIEditServing``.
        extra_body: more JSON fields for the request (``top_p``, ``response_format`` ...).
    """

    name = NAME
    batch_size = 1

    def __init__(self, api_url: str, model: str, api_key: Optional[str] = None, *, max_concurrency: int = 8,
                 max_tokens: int = 512, max_retries: int = 5, timeout: float = 300, connect_timeout: float = 30,
                 retry_delay: float = 1.0, extra_body: Optional[dict] = None):
        if not isinstance(model, str) or not model.strip():
            raise InputError(f"the API judge needs the model name its server knows, got {model!r}")
        check_positive_int(max_concurrency=max_concurrency, max_tokens=max_tokens)
        check_seconds(timeout=timeout, connect_timeout=connect_timeout)
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise InputError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if not isinstance(retry_delay, (int, float)) or isinstance(retry_delay, bool) or retry_delay < 0:
            raise InputError(f"retry_delay must be a number of seconds >= 0, got {retry_delay!r}")
        self.api_url = chat_base_url(api_url)
        self.model = model
        self.concurrency = max_concurrency
        self.max_tokens = max_tokens
        self.extra_body = check_extra_body(extra_body, RESERVED_FIELDS)
        self._http = SharedClient(api_key, timeout, connect_timeout, max_concurrency,
                                  RetryPolicy(max_retries=max_retries, base_delay=float(retry_delay)))

    def __repr__(self) -> str:
        return f"APIJudge(api_url={self.api_url!r}, model={self.model!r}, max_concurrency={self.concurrency})"

    def fingerprint(self) -> dict:
        """URL, model, prompt and request parameters; never the key."""
        return {"metric": self.name, "backend": "api", "api_url": self.api_url, "model": self.model,
                "prompt": prompt_version(), "max_tokens": self.max_tokens, "extra_body": self.extra_body}

    def usage(self) -> dict:
        """Requests sent (retries included), retries, unparsed answers, and the API's token sums."""
        return self._http.usage(("requests", "retries", "unparsed"))

    def client(self) -> HTTPClient:
        """The shared client (see ``SharedClient``)."""
        return self._http.get()

    def close(self) -> None:
        self._http.close()

    def check_dependencies(self) -> None:
        from dataflow.http import import_httpx

        import_httpx()

    def check(self) -> Optional[str]:
        """Reach the server and check the key without judging (``GET {base}/models``); a note back."""
        checker = self._http.checker()
        try:
            payload = json_or_none(self._send(checker, "GET", f"{self.api_url}/models"))
        except RequestFailed as exc:
            raise ModelLoadError(f"the judge API check failed: {exc}") from None
        finally:
            checker.close()
        listed = [m.get("id") for m in payload.get("data", []) if isinstance(m, dict)] \
            if isinstance(payload, dict) and isinstance(payload.get("data"), list) else []
        if listed and self.model not in listed:
            shown = ", ".join(map(str, listed[:5])) + (", ..." if len(listed) > 5 else "")
            return f"{self.api_url} answers, but lists no model {self.model!r} (it lists: {shown})"
        return f"{self.api_url} answers; judge model {self.model!r}" + (" is listed" if listed else "")

    # -- judging -------------------------------------------------------------------------------------------
    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        return [self.score_one(item) for item in items]

    def score_one(self, item: ScoreItem) -> ScoreResult:
        """The item's judgement or its error; ``ServiceError`` (a refused key, a wrong URL or model) stops the run."""
        try:
            source, edit = source_and_edit(item)
        except ValueError as exc:
            return ScoreResult(error=str(exc))
        body = {"model": self.model, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(source)}},
            {"type": "image_url", "image_url": {"url": data_url(edit)}},
            {"type": "text", "text": judge_prompt(item.instruction)},
        ]}], "temperature": 0, "max_tokens": self.max_tokens, **self.extra_body}
        try:
            response = self._send(self.client(), "POST", self.api_url + ENDPOINT, body)
        except RequestFailed as exc:  # retries exhausted, or a 4xx for this request alone
            return ScoreResult(error=str(exc))
        payload = json_or_none(response)
        if isinstance(payload, dict):
            self._http.counters.add_usage(payload.get("usage"))
        text = answer_text(payload)
        if text is None:
            self._http.counters.add("unparsed")
            shown = redact(" ".join(response.text.split())[:200], (self._http.key,))
            return ScoreResult(error=f"the judge API answered without choices[0].message.content: {shown!r}")
        result = judgement(text, (self._http.key,))
        if result.error:
            self._http.counters.add("unparsed")
        return result

    def _send(self, client: HTTPClient, method: str, url: str, body: Any = None) -> Any:
        """Send with the key's header; 401/403/404 become a ``ServiceError`` that says what to check."""
        headers = {"Authorization": f"Bearer {self._http.key.reveal()}"} if self._http.key else {}
        try:
            return client.request(method, url, headers=headers, json=body)
        except Unauthorized as exc:
            hint = (f"the API key was refused; check {KEY_VARIABLE}" if self._http.key
                    else f"no API key was given; set {KEY_VARIABLE}")
            raise ServiceError(f"{exc} ({hint})") from None
        except NotFound as exc:
            raise ServiceError(f"{exc} (check the judge model name {self.model!r} and the API URL "
                               f"{self.api_url!r})") from None
