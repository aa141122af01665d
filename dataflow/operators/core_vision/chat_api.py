"""One OpenAI-compatible ``POST {base}/chat/completions`` endpoint with images, for every operator that asks a VLM
over HTTP: the API judge (``eval/metrics/api_judge.py``) and the API instruction writer
(``generate/instructions/api_writer.py``). The HTTP layer below (``dataflow.http``) retries and keeps the key
hygienic; this module knows the chat request's shape.

The request follows OpenAI's current chat completions parameters (the ``openai`` SDK's
``completion_create_params``): the answer's length is capped by ``max_completion_tokens`` (``max_tokens`` is
deprecated there and refused by reasoning models; older self-hosted servers may need it: ``token_field=
"max_tokens"``), and ``temperature`` is sent only when given (reasoning models take none but their default). A
model's refusal (``message.refusal``) is read in its own words.
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
)
from dataflow.http.options import check_extra_body, check_seconds
from dataflow.http.urls import api_root

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


def image_part(image: Any) -> dict:
    """A user message part carrying ``image`` (a PNG data URL)."""
    return {"type": "image_url", "image_url": {"url": data_url(image)}}


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


class ChatAPI:
    """A chat completions endpoint, its model and request settings, and one shared client for every thread.

    Args:
        api_url: the API root, with or without ``/v1`` (``http://host:8000``, ``https://api.openai.com/v1``).
        model: the model name the server knows (vLLM's ``--served-model-name``).
        api_key: sent as ``Authorization: Bearer``; none when empty (self-hosted servers).
        who: what messages call the model ("the judge model", "the instruction model").
        max_concurrency: requests in flight at once.
        max_tokens: the longest answer, reasoning included (a reasoning model spends part of it thinking).
        token_field: the field that carries ``max_tokens``: ``max_completion_tokens`` (OpenAI's current name,
            which vLLM and SGLang take too) or ``max_tokens`` (for a server that knows only the old name).
        temperature: sent when given; reasoning models refuse any value but their default.
        max_retries, timeout, connect_timeout, retry_delay: as for ``APIEditServing``.
        extra_body: more JSON fields for the request (``top_p``, ``response_format``, ``reasoning_effort`` ...).
    """

    def __init__(self, api_url: str, model: str, api_key: Optional[str] = None, *, who: str = "the model",
                 max_concurrency: int = 8, max_tokens: int = 2048, token_field: str = "max_completion_tokens",
                 temperature: Optional[float] = None, max_retries: int = 5, timeout: float = 300,
                 connect_timeout: float = 30, retry_delay: float = 1.0, extra_body: Optional[dict] = None):
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
        self.who = who
        self.concurrency = max_concurrency
        self.max_tokens = max_tokens
        self.token_field = token_field
        self.temperature = temperature
        self.extra_body = check_extra_body(extra_body, RESERVED_FIELDS)
        self.http = SharedClient(api_key, timeout, connect_timeout, max_concurrency,
                                 RetryPolicy(max_retries=max_retries, base_delay=float(retry_delay)))

    @property
    def key(self) -> Any:
        return self.http.key

    @property
    def counters(self) -> Any:
        return self.http.counters

    def close(self) -> None:
        self.http.close()

    def body(self, parts: Sequence[dict]) -> dict:
        """The request for one user message of ``parts`` (image parts, then text)."""
        body = {"model": self.model, "messages": [{"role": "user", "content": list(parts)}],
                self.token_field: self.max_tokens, **self.extra_body}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    def ask(self, parts: Sequence[dict]) -> tuple[Any, Any]:
        """(the answer's JSON, the response) for one user message; ``RequestFailed`` for this request alone
        (retries exhausted, a 4xx), ``ServiceError`` when every request would fail alike."""
        response = self.send(self.http.get(), "POST", self.api_url + ENDPOINT, self.body(parts))
        payload = json_or_none(response)
        if isinstance(payload, dict):
            self.http.counters.add_usage(payload.get("usage"))
        return payload, response

    def check(self) -> Optional[str]:
        """Reach the server and check the key without asking anything (``GET {base}/models``); a note back."""
        checker = self.http.checker()
        try:
            payload = json_or_none(self.send(checker, "GET", f"{self.api_url}/models"))
        except RequestFailed as exc:
            raise ModelLoadError(f"the check of {self.api_url} failed: {exc}") from None
        finally:
            checker.close()
        listed = [m.get("id") for m in payload.get("data", []) if isinstance(m, dict)] \
            if isinstance(payload, dict) and isinstance(payload.get("data"), list) else []
        if listed and self.model not in listed:
            shown = ", ".join(map(str, listed[:5])) + (", ..." if len(listed) > 5 else "")
            return f"{self.api_url} answers, but lists no model {self.model!r} (it lists: {shown})"
        return f"{self.api_url} answers; {self.who} {self.model!r}" + (" is listed" if listed else "")

    def send(self, client: HTTPClient, method: str, url: str, body: Any = None) -> Any:
        """Send with the key's header; a refused key, a wrong URL or model, and a parameter the model refuses become
        a ``ServiceError`` that says what to check."""
        key = self.http.key
        headers = {"Authorization": f"Bearer {key.reveal()}"} if key else {}
        try:
            return client.request(method, url, headers=headers, json=body)
        except Rejected as exc:
            param = _param(exc.payload)
            if error_code(exc.payload) in PARAMETER_CODES and param in (*TOKEN_FIELDS, "temperature"):
                other = next(field for field in TOKEN_FIELDS if field != self.token_field)
                hint = f"token_field={other!r}" if param in TOKEN_FIELDS else "temperature=None (not sent)"
                raise ServiceError(f"{self.who} {self.model!r} refuses the parameter {param!r}: {exc}; try "
                                   f"{hint}") from None
            raise
        except Unauthorized as exc:
            hint = (f"the API key was refused; check {KEY_VARIABLE}" if key
                    else f"no API key was given; set {KEY_VARIABLE}")
            raise ServiceError(f"{exc} ({hint})") from None
        except ModelNotFound as exc:
            raise ServiceError(f"{self.who} {self.model!r} does not exist at {self.api_url} ({exc.detail}); "
                               f"the server lists its models at GET {self.api_url}/models") from None
        except NotFound as exc:
            raise ServiceError(f"{exc} (check {self.who} name {self.model!r} and the API URL "
                               f"{self.api_url!r})") from None


def _param(payload: Any) -> Optional[str]:
    """``error.param`` of an OpenAI error body: the request field it is about."""
    error = payload.get("error") if isinstance(payload, dict) else None
    param = error.get("param") if isinstance(error, dict) else None
    return param if isinstance(param, str) else None
