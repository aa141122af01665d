"""``APIJudge``: a VLM judge behind any OpenAI-compatible ``POST {base}/chat/completions`` (vLLM, SGLang, a cloud
model), one request per item, sent through ``ChatAPI`` (``operators/core_vision/chat_api.py``: the request's
shape, token field, refusals) over the shared HTTP layer (retries, backoff, key hygiene).

The engine runs up to ``concurrency`` (``max_concurrency``) ``score`` calls at once from threads; ``score`` is
thread-safe: the client (one ``httpx.Client``) is shared and the counters sit behind a lock.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from dataflow.core.errors import InputError
from dataflow.http import HTTPClient, RequestFailed, redact
from dataflow.operators.core_vision.chat_api import (
    ChatAPI,
    answer_message,
    answer_text,
    chat_base_url,  # noqa: F401  (this module's name for it, used by callers and tests)
    image_part,
    refusal_text,
)
from dataflow.operators.core_vision.eval.metric import Metric, ScoreItem, ScoreResult
from dataflow.operators.core_vision.eval.metrics.images import source_and_edit
from dataflow.operators.core_vision.eval.metrics.judge import (
    NAME,
    judge_prompt,
    judgement,
    prompt_version,
)


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
        self.chat = ChatAPI(api_url, model, api_key, who="the judge model", max_concurrency=max_concurrency,
                            max_tokens=max_tokens, token_field=token_field, temperature=temperature,
                            max_retries=max_retries, timeout=timeout, connect_timeout=connect_timeout,
                            retry_delay=retry_delay, extra_body=extra_body)
        self.api_url, self.model, self.concurrency = self.chat.api_url, model, max_concurrency
        self.max_tokens, self.token_field, self.temperature = max_tokens, token_field, temperature
        self.extra_body = self.chat.extra_body
        self._http = self.chat.http

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
        return self.chat.check()

    # -- judging -------------------------------------------------------------------------------------------
    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        return [self.score_one(item) for item in items]

    def score_one(self, item: ScoreItem) -> ScoreResult:
        """The item's judgement or its error; ``ServiceError`` (a refused key, a wrong URL or model) stops the run."""
        try:
            source, edit = source_and_edit(item)
        except ValueError as exc:
            return ScoreResult(error=str(exc))
        parts = [image_part(source), image_part(edit), {"type": "text", "text": judge_prompt(item.instruction)}]
        try:
            payload, response = self.chat.ask(parts)
        except RequestFailed as exc:  # retries exhausted, or a 4xx for this request alone
            return ScoreResult(error=str(exc))
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
