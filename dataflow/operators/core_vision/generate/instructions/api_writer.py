"""``APIWriter``: instructions from a VLM behind any OpenAI-compatible ``POST {base}/chat/completions`` (vLLM,
SGLang, a cloud model), one request per image, through the shared HTTP layer (retries with backoff and
``Retry-After``, requests in flight, keys never shown), as the API judge sends its requests.

The engine runs up to ``concurrency`` (``max_concurrency``) ``write`` calls at once from threads; ``write`` is
thread-safe: the client is shared and the counters sit behind a lock.
"""

from __future__ import annotations

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
from dataflow.operators.core_vision.eval.metrics.api_judge import (
    ENDPOINT,
    KEY_VARIABLE,
    answer_text,
    chat_base_url,
    data_url,
)
from dataflow.operators.core_vision.generate.instructions.prompts import (
    AnswerError,
    generate_prompt,
    prompt_version,
    rewrite_prompt,
)
from dataflow.operators.core_vision.generate.instructions.writer import InstructionAsk, ModelWriter

RESERVED_FIELDS = frozenset({"model", "messages", "temperature", "max_tokens"})
MAX_IMAGE_SIDE = 1024


def prompt_for(ask: InstructionAsk) -> str:
    """The text that goes with the ask's image."""
    return rewrite_prompt(ask.instruction) if ask.instruction is not None else generate_prompt(ask.types)


def shrunk(image: Any, max_side: int) -> Any:
    """``image`` with its longer side at most ``max_side`` pixels (a copy; the aspect ratio kept): VLMs resize
    inputs far below camera sizes, and a smaller PNG costs less to send."""
    if max(image.size) <= max_side:
        return image
    copy = image.copy()
    copy.thumbnail((max_side, max_side))
    return copy


class APIWriter(ModelWriter):
    """Write instructions with a VLM served by an OpenAI-compatible chat completions API.

    Each image is one request: a user message holding the image as an ``image_url`` part (a PNG data URL, its
    longer side at most ``max_image_side``), then the prompt. An answer that cannot be read, a 4xx other than
    401/403/404, and retries exhausted are that image's error; 401/403/404 raise ``ServiceError`` (the run stops).

    Args:
        api_url: the API root, with or without ``/v1`` (``http://host:8000``, ``https://api.openai.com/v1``).
        model: the model name the server knows.
        api_key: sent as ``Authorization: Bearer``; none when empty (self-hosted servers). The CLI reads it from
            ``DF_API_KEY``.
        max_concurrency: requests in flight at once.
        temperature: sampling temperature (some variety between images helps a dataset).
        max_tokens: the longest answer.
        max_image_side: the image is shrunk to this longer side before sending.
        max_retries, timeout, connect_timeout, retry_delay: as for the API judge and ``APIEditServing``.
        extra_body: more JSON fields for the request (``top_p``, ``response_format`` ...).
    """

    backend = "api"

    def __init__(self, api_url: str, model: str, api_key: Optional[str] = None, *, max_concurrency: int = 8,
                 temperature: float = 0.7, max_tokens: int = 1024, max_image_side: int = MAX_IMAGE_SIDE,
                 max_retries: int = 5, timeout: float = 300, connect_timeout: float = 30, retry_delay: float = 1.0,
                 extra_body: Optional[dict] = None):
        if not isinstance(api_url, str) or not api_url.strip():
            raise InputError("the api backend needs the API's URL (--api-url, or DF_BASE_URL)")
        if not isinstance(model, str) or not model.strip():
            raise InputError(f"the api backend needs the model name its server knows (--model), got {model!r}")
        check_positive_int(max_concurrency=max_concurrency, max_tokens=max_tokens, max_image_side=max_image_side)
        check_seconds(timeout=timeout, connect_timeout=connect_timeout)
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise InputError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if not isinstance(retry_delay, (int, float)) or isinstance(retry_delay, bool) or retry_delay < 0:
            raise InputError(f"retry_delay must be a number of seconds >= 0, got {retry_delay!r}")
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature < 0:
            raise InputError(f"temperature must be a number >= 0, got {temperature!r}")
        self.api_url = chat_base_url(api_url)
        self.model = model
        self.concurrency = max_concurrency
        self.temperature = float(temperature)
        self.max_tokens = max_tokens
        self.max_image_side = max_image_side
        self.extra_body = check_extra_body(extra_body, RESERVED_FIELDS)
        self._http = SharedClient(api_key, timeout, connect_timeout, max_concurrency,
                                  RetryPolicy(max_retries=max_retries, base_delay=float(retry_delay)))

    def __repr__(self) -> str:
        return f"APIWriter(api_url={self.api_url!r}, model={self.model!r}, max_concurrency={self.concurrency})"

    def fingerprint(self) -> dict:
        """URL, model, prompt and request parameters; never the key."""
        return {"writer": self.backend, "api_url": self.api_url, "model": self.model, "prompt": prompt_version(),
                "temperature": self.temperature, "max_tokens": self.max_tokens,
                "max_image_side": self.max_image_side, "extra_body": self.extra_body}

    def usage(self) -> dict:
        """Requests sent (retries included), retries, images without usable drafts, and the API's token sums."""
        return self._http.usage(("requests", "retries", "unparsed"))

    def close(self) -> None:
        self._http.close()

    def check(self) -> Optional[str]:
        """Reach the server and check the key without asking anything (``GET {base}/models``); a note back."""
        checker = self._http.checker()
        try:
            payload = json_or_none(self._send(checker, "GET", f"{self.api_url}/models"))
        except RequestFailed as exc:
            raise ModelLoadError(f"the instruction API check failed: {exc}") from None
        finally:
            checker.close()
        listed = [m.get("id") for m in payload.get("data", []) if isinstance(m, dict)] \
            if isinstance(payload, dict) and isinstance(payload.get("data"), list) else []
        if listed and self.model not in listed:
            return f"{self.api_url} answers, but lists no model {self.model!r}"
        return f"{self.api_url} answers"

    def answer(self, asks: Sequence[InstructionAsk]) -> list:
        return [self.answer_one(ask) for ask in asks]

    def answer_one(self, ask: InstructionAsk) -> Any:
        """The model's answer text, or an ``AnswerError`` (retries exhausted, an answer without text)."""
        body = {"model": self.model, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(shrunk(ask.image, self.max_image_side))}},
            {"type": "text", "text": prompt_for(ask)},
        ]}], "temperature": self.temperature, "max_tokens": self.max_tokens, **self.extra_body}
        try:
            response = self._send(self._http.get(), "POST", self.api_url + ENDPOINT, body)
        except RequestFailed as exc:  # retries exhausted, or a 4xx for this request alone
            return AnswerError(str(exc))
        payload = json_or_none(response)
        if isinstance(payload, dict):
            self._http.counters.add_usage(payload.get("usage"))
        text = answer_text(payload)
        if text is None:
            shown = redact(" ".join(response.text.split())[:200], (self._http.key,))
            return AnswerError(f"the API answered without choices[0].message.content: {shown!r}")
        return redact(text, (self._http.key,))

    def write(self, asks: Sequence[InstructionAsk]) -> list:
        drafts = super().write(asks)
        for draft in drafts:
            if draft.error:
                self._http.counters.add("unparsed")
        return drafts

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
            raise ServiceError(f"{exc} (check the model name {self.model!r} and the API URL "
                               f"{self.api_url!r})") from None
