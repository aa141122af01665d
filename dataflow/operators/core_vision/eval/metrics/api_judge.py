"""``APIJudge``: a VLM judge behind any OpenAI-compatible ``POST {base}/chat/completions`` (vLLM, SGLang, a cloud
model), one request per item, sent through the shared ``HTTPClient`` (retries, backoff, key hygiene).

The request follows OpenAI's current chat completions parameters (the ``openai`` SDK's ``completion_create_params``):
the answer's length is capped by ``max_completion_tokens`` (``max_tokens`` is deprecated there and refused by
reasoning models; older self-hosted servers may need it: ``token_field="max_tokens"``), and ``temperature`` is
sent only when given (reasoning models take none but their default). A model's refusal (``message.refusal``) is
reported in its own words.

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
    ModelNotFound,
    NotFound,
    Rejected,
    RequestFailed,
    RetryPolicy,
    SharedClient,
    Unauthorized,
    error_code,
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
TOKEN_FIELDS = ("max_completion_tokens", "max_tokens")
RESERVED_FIELDS = frozenset({"model", "messages", "temperature", *TOKEN_FIELDS})
# error codes of a 400 saying that the model takes no such parameter or value: every request would fail alike
PARAMETER_CODES = frozenset({"unsupported_parameter", "unsupported_value"})


def chat_base_url(url: str) -> str:
    """The API root with its version segment (``api_root``'s rule: ``/v1`` added when absent, never doubled); a
    URL naming the endpoint itself (``.../v1/chat/completions``) is cut back to its root."""
    return api_root(url, (ENDPOINT,))


def data_url(image: Any) -> str:
    """A PNG data URL of a PIL image."""
    from dataflow.io.image_io import encode_png

    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def answer_message(payload: Any) -> Optional[dict]:
    """``choices[0]`` of a chat completion, or None."""
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    return choices[0]


def answer_text(payload: Any) -> Optional[str]:
    """``choices[0].message.content``: a string, or the text parts of a list of parts; None if absent."""
    choice = answer_message(payload)
    message = choice.get("message") if choice else None
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        content = "".join(texts) if texts else None
    return content if isinstance(content, str) else None


def refusal_text(payload: Any) -> Optional[str]:
    """``choices[0].message.refusal``: the model's words when it declined, on one line; None otherwise."""
    choice = answer_message(payload)
    message = choice.get("message") if choice else None
    refusal = message.get("refusal") if isinstance(message, dict) else None
    return " ".join(refusal.split()) if isinstance(refusal, str) and refusal.strip() else None


class APIJudge(Metric):
    """Judge edits with a VLM served by an OpenAI-compatible chat completions API.

    Each item is one request: a user message holding the source (the item's first source) and the edit as
    ``image_url`` parts (PNG data URLs), in that order, then the judge's prompt. Values: ``sc``, ``pq``,
    ``overall``, ``reason`` (see ``judge``). An answer without both scores, a refusal (in the model's words), a
    4xx other than 401/403/404, and retries exhausted are that item's error; 401/403/404, a model that does not
    exist and a parameter the model refuses raise ``ServiceError`` (every item would fail alike).

    Args:
        api_url: the API root, with or without ``/v1`` (``http://host:8000``, ``https://api.openai.com/v1``).
        model: the model name the server knows (vLLM's ``--served-model-name``).
        api_key: sent as ``Authorization: Bearer``; none when empty (self-hosted servers).
        max_concurrency: requests in flight at once (``score`` calls the engine may run from threads).
        max_tokens: the longest answer, reasoning included (a reasoning model spends part of it thinking).
        token_field: the field that carries ``max_tokens``: ``max_completion_tokens`` (OpenAI's current name,
            which vLLM and SGLang take too) or ``max_tokens`` (for a server that knows only the old name).
        temperature: sent when given (0 makes a self-hosted judge repeatable); reasoning models refuse any value
            but their default, so none is sent by default.
        max_retries, timeout, connect_timeout, retry_delay: as for ``APIEditServing``.
        extra_body: more JSON fields for the request (``top_p``, ``response_format``, ``reasoning_effort`` ...).
    """

    name = NAME
    batch_size = 1

    def __init__(self, api_url: str, model: str, api_key: Optional[str] = None, *, max_concurrency: int = 8,
                 max_tokens: int = 2048, token_field: str = "max_completion_tokens",
                 temperature: Optional[float] = None, max_retries: int = 5, timeout: float = 300,
                 connect_timeout: float = 30, retry_delay: float = 1.0, extra_body: Optional[dict] = None):
        if not isinstance(model, str) or not model.strip():
            raise InputError(f"the API judge needs the model name its server knows, got {model!r}")
        check_positive_int(max_concurrency=max_concurrency, max_tokens=max_tokens)
        check_seconds(timeout=timeout, connect_timeout=connect_timeout)
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise InputError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if not isinstance(retry_delay, (int, float)) or isinstance(retry_delay, bool) or retry_delay < 0:
            raise InputError(f"retry_delay must be a number of seconds >= 0, got {retry_delay!r}")
        if token_field not in TOKEN_FIELDS:
            raise InputError(f"token_field must be one of {', '.join(TOKEN_FIELDS)}, got {token_field!r}")
        if temperature is not None and (not isinstance(temperature, (int, float)) or isinstance(temperature, bool)
                                        or not 0 <= temperature <= 2):
            raise InputError(f"temperature must be a number from 0 to 2 (or None: not sent), got {temperature!r}")
        self.api_url = chat_base_url(api_url)
        self.model = model
        self.concurrency = max_concurrency
        self.max_tokens = max_tokens
        self.token_field = token_field
        self.temperature = temperature
        self.extra_body = check_extra_body(extra_body, RESERVED_FIELDS)
        self._http = SharedClient(api_key, timeout, connect_timeout, max_concurrency,
                                  RetryPolicy(max_retries=max_retries, base_delay=float(retry_delay)))

    def __repr__(self) -> str:
        return f"APIJudge(api_url={self.api_url!r}, model={self.model!r}, max_concurrency={self.concurrency})"

    def fingerprint(self) -> dict:
        """URL, model, prompt and request parameters; never the key."""
        return {"metric": self.name, "backend": "api", "api_url": self.api_url, "model": self.model,
                "prompt": prompt_version(), "max_tokens": self.max_tokens, "temperature": self.temperature,
                "extra_body": self.extra_body}

    def usage(self) -> dict:
        """Requests sent (retries included), retries, refusals, unparsed answers, the bytes sent, and the API's
        token sums."""
        return self._http.usage(("requests", "retries", "refusals", "unparsed", "request_bytes"))

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
        ]}], self.token_field: self.max_tokens, **self.extra_body}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        try:
            response = self._send(self.client(), "POST", self.api_url + ENDPOINT, body)
        except RequestFailed as exc:  # retries exhausted, or a 4xx for this request alone
            return ScoreResult(error=str(exc))
        payload = json_or_none(response)
        if isinstance(payload, dict):
            self._http.counters.add_usage(payload.get("usage"))
        return self.read_answer(payload, len(response.content))

    def read_answer(self, payload: Any, size: int = 0) -> ScoreResult:
        """The judgement of an answer, or why there is none: a refusal in the model's words, an answer cut at the
        token limit, or one without text; never a piece of the raw body."""
        refusal = refusal_text(payload)
        choice = answer_message(payload)
        finish = choice.get("finish_reason") if choice else None
        if refusal or (finish == "content_filter" and not answer_text(payload)):
            self._http.counters.add("refusals")
            words = redact(refusal, (self._http.key,)) if refusal else "withheld by the API's content filter"
            return ScoreResult(error=f"the judge refused: {words}")
        text = answer_text(payload)
        if text is None or not text.strip():
            self._http.counters.add("unparsed")
            if finish == "length":
                return ScoreResult(error=f"the judge's answer was cut at {self.token_field}={self.max_tokens} "
                                         "before any text (finish_reason length); a reasoning model may need a "
                                         "larger max_tokens")
            if not isinstance(payload, dict):
                return ScoreResult(error=f"the judge API's answer is not a JSON object ({size} bytes)")
            if choice is None:
                return ScoreResult(error="the judge API's answer holds no choices (its fields: "
                                         f"{', '.join(sorted(map(str, payload))) or 'none'})")
            return ScoreResult(error=f"the judge's answer holds no text (finish_reason {finish or 'none given'})")
        result = judgement(text, (self._http.key,))
        if result.error:
            self._http.counters.add("unparsed")
        return result

    def _send(self, client: HTTPClient, method: str, url: str, body: Any = None) -> Any:
        """Send with the key's header; 401/403/404 become a ``ServiceError`` that says what to check."""
        headers = {"Authorization": f"Bearer {self._http.key.reveal()}"} if self._http.key else {}
        try:
            return client.request(method, url, headers=headers, json=body)
        except Rejected as exc:
            param = _param(exc.payload)
            if error_code(exc.payload) in PARAMETER_CODES and param in (*TOKEN_FIELDS, "temperature"):
                other = next(field for field in TOKEN_FIELDS if field != self.token_field)
                hint = f"token_field={other!r}" if param in TOKEN_FIELDS else "temperature=None (not sent)"
                raise ServiceError(f"the judge model {self.model!r} refuses the parameter {param!r}: {exc}; try "
                                   f"{hint}") from None
            raise
        except Unauthorized as exc:
            hint = (f"the API key was refused; check {KEY_VARIABLE}" if self._http.key
                    else f"no API key was given; set {KEY_VARIABLE}")
            raise ServiceError(f"{exc} ({hint})") from None
        except ModelNotFound as exc:
            raise ServiceError(f"the judge model {self.model!r} does not exist at {self.api_url} ({exc.detail}); "
                               f"the server lists its models at GET {self.api_url}/models") from None
        except NotFound as exc:
            raise ServiceError(f"{exc} (check the judge model name {self.model!r} and the API URL "
                               f"{self.api_url!r})") from None


def _param(payload: Any) -> Optional[str]:
    """``error.param`` of an OpenAI error body: the request field it is about."""
    error = payload.get("error") if isinstance(payload, dict) else None
    param = error.get("param") if isinstance(error, dict) else None
    return param if isinstance(param, str) else None
