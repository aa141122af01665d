"""``APIWriter``: instructions from a VLM behind any OpenAI-compatible ``POST {base}/chat/completions`` (vLLM,
SGLang, a cloud model), one request per image, through ``ChatAPI`` (``operators/core_vision/chat_api.py``), as the
API judge sends its requests: the same token field, refusals, retries with backoff and ``Retry-After``, requests in
flight, and keys never shown.

The engine runs up to ``concurrency`` (``max_concurrency``) ``write`` calls at once from threads; ``write`` is
thread-safe: the client is shared and the counters sit behind a lock.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from dataflow.core.errors import InputError
from dataflow.core.validation import check_positive_int
from dataflow.http import RequestFailed, redact
from dataflow.operators.core_vision.chat_api import ChatAPI, answer_text, image_part, refusal_text
from dataflow.operators.core_vision.generate.instructions.prompts import (
    AnswerError,
    generate_prompt,
    prompt_version,
    rewrite_prompt,
)
from dataflow.operators.core_vision.generate.instructions.writer import InstructionAsk, ModelWriter

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
        temperature: sampling temperature (some variety between images helps a dataset); None: not sent
            (reasoning models take no other than their default).
        max_tokens: the longest answer, reasoning included.
        token_field: ``max_completion_tokens`` (OpenAI's current name, which vLLM and SGLang take too) or
            ``max_tokens`` (for a server that knows only the old name).
        max_image_side: the image is shrunk to this longer side before sending.
        max_retries, timeout, connect_timeout, retry_delay: as for the API judge and ``APIEditServing``.
        extra_body: more JSON fields for the request (``top_p``, ``response_format`` ...).
    """

    backend = "api"

    def __init__(self, api_url: str, model: str, api_key: Optional[str] = None, *, max_concurrency: int = 8,
                 temperature: Optional[float] = 0.7, max_tokens: int = 1024,
                 token_field: str = "max_completion_tokens", max_image_side: int = MAX_IMAGE_SIDE,
                 max_retries: int = 5, timeout: float = 300, connect_timeout: float = 30, retry_delay: float = 1.0,
                 extra_body: Optional[dict] = None):
        if not isinstance(api_url, str) or not api_url.strip():
            raise InputError("the api backend needs the API's URL (--api-url, or DF_BASE_URL)")
        if not isinstance(model, str) or not model.strip():
            raise InputError(f"the api backend needs the model name its server knows (--model), got {model!r}")
        check_positive_int(max_image_side=max_image_side)
        self.chat = ChatAPI(api_url, model, api_key, who="the instruction model", max_concurrency=max_concurrency,
                            max_tokens=max_tokens, token_field=token_field, temperature=temperature,
                            max_retries=max_retries, timeout=timeout, connect_timeout=connect_timeout,
                            retry_delay=retry_delay, extra_body=extra_body)
        self.api_url, self.model, self.concurrency = self.chat.api_url, model, max_concurrency
        self.temperature, self.max_tokens = temperature, max_tokens
        self.max_image_side = max_image_side
        self.extra_body = self.chat.extra_body
        self._http = self.chat.http

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
        return self.chat.check()

    def answer(self, asks: Sequence[InstructionAsk]) -> list:
        return [self.answer_one(ask) for ask in asks]

    def answer_one(self, ask: InstructionAsk) -> Any:
        """The model's answer text, or an ``AnswerError`` (retries exhausted, an answer without text)."""
        parts = [image_part(shrunk(ask.image, self.max_image_side)), {"type": "text", "text": prompt_for(ask)}]
        try:
            payload, response = self.chat.ask(parts)
        except RequestFailed as exc:  # retries exhausted, or a 4xx for this request alone
            return AnswerError(str(exc))
        refusal = refusal_text(payload)
        if refusal:
            return AnswerError(f"the instruction model refused: {redact(refusal, (self._http.key,))}")
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
