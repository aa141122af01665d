"""Gemini's image edit request: ``POST {root}/v1beta/models/{model}:generateContent`` with ``x-goog-api-key``.

The reference images go as inline data parts, followed by the instruction as a text part; the edited image comes
back as an inline data part of the first candidate. An answer without one is that row's error, carrying the
model's words: a blocked prompt (``promptFeedback.blockReason``), a safety ``finishReason``, or text alone.

Gemini's image models return one image per request (``candidateCount`` > 1 is refused for them), so several
images per row are several requests.
"""

from __future__ import annotations

import base64
from typing import Any, Optional, Sequence

from dataflow.core.errors import InputError
from dataflow.http import Rejected, Unauthorized, check_base_url, error_code
from dataflow.serving.api.edit_format import (
    AnswerError,
    EditAnswer,
    EditCall,
    decode_base64,
    short,
)

DEFAULT_URL = "https://generativelanguage.googleapis.com"
DEFAULT_MODEL = "gemini-2.5-flash-image"
API_VERSION = "v1beta"
# finishReason values that mean the model declined for safety or policy reasons
REFUSAL_FINISH_REASONS = frozenset({
    "SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT", "BLOCKLIST", "SPII",
    "RECITATION", "IMAGE_RECITATION",
})


def gemini_root_url(url: str) -> str:
    """The API root without a version segment: ``.../v1beta`` (or ``/v1``) given by the user is cut off."""
    url = check_base_url(url)
    for suffix in ("/v1beta", "/v1"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


def deep_merge(base: dict, extra: dict) -> dict:
    """``base`` updated by ``extra``, merging nested objects key by key."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class GeminiEditFormat:
    """Requests and answers of ``generateContent`` for Gemini's image models.

    Args:
        api_url: the API root (``https://generativelanguage.googleapis.com``, with or without ``/v1beta``).
        model: the model in the path.
        size, quality: OpenAI parameters that Gemini does not take (refused; see ``extra_body``).
        extra_body: merged into the request body, objects key by key: e.g.
            ``{"generationConfig": {"imageConfig": {"aspectRatio": "16:9"}}}`` or ``{"safetySettings": [...]}``.
    """

    name = "gemini"
    default_url = DEFAULT_URL
    default_model = DEFAULT_MODEL
    images_per_call: Optional[int] = 1
    reserved_fields = frozenset({"contents"})

    def __init__(self, api_url: str, model: str, size: Optional[str] = None, quality: Optional[str] = None,
                 extra_body: Optional[dict] = None):
        if size is not None or quality is not None:
            raise InputError(
                "size and quality are OpenAI parameters; for Gemini pass extra_body="
                "{'generationConfig': {'imageConfig': {'aspectRatio': '16:9', 'imageSize': '2K'}}}"
            )
        self.root_url = gemini_root_url(api_url)
        self.model = model.removeprefix("models/")
        self.extra_body = dict(extra_body or {})

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/{API_VERSION}"

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/models/{self.model}:generateContent"

    @staticmethod
    def headers(key: str) -> dict:
        return {"x-goog-api-key": key} if key else {}

    def edit_call(self, pngs: Sequence[bytes], prompt: str, n: int, seed: Optional[int] = None) -> EditCall:
        """One request for one image (``n`` must be 1)."""
        if n != 1:
            raise ValueError("Gemini image models return one image per request")
        parts: list[dict] = [
            {"inline_data": {"mime_type": "image/png", "data": base64.b64encode(png).decode("ascii")}}
            for png in pngs
        ]
        parts.append({"text": prompt})
        config: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
        if seed is not None:
            config["seed"] = seed
        body = deep_merge({"contents": [{"role": "user", "parts": parts}], "generationConfig": config},
                          self.extra_body)
        return EditCall("POST", self.endpoint, json=body)

    def read_answer(self, payload: Any) -> EditAnswer:
        """The first final (non-thought) inline image of the first candidate."""
        if not isinstance(payload, dict):
            raise AnswerError("the response is not a JSON object")
        feedback = payload.get("promptFeedback") or {}
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            words = feedback.get("blockReasonMessage")
            raise AnswerError(f"refused by the API: the prompt was blocked (blockReason {feedback['blockReason']})"
                              + (f": {short(words)}" if words else ""), refusal=True)
        candidates = payload.get("candidates")
        if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
            raise AnswerError("the response holds no candidates")
        candidate = candidates[0]
        parts = (candidate.get("content") or {}).get("parts") or []
        texts, images = [], []
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict) or part.get("thought"):
                continue
            inline = part.get("inlineData") or part.get("inline_data")
            if isinstance(inline, dict):
                mime = inline.get("mimeType") or inline.get("mime_type") or ""
                if mime.startswith("image/"):
                    images.append(decode_base64(inline.get("data"), "inline image"))
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
        if images:
            return EditAnswer(images[:1])
        reason = candidate.get("finishReason") or "none given"
        said = f"; the model said: {short(' '.join(texts))}" if "".join(texts).strip() else ""
        detail = candidate.get("finishMessage")
        said += f"; {short(detail)}" if isinstance(detail, str) and detail else ""
        if reason in REFUSAL_FINISH_REASONS:
            raise AnswerError(f"refused by the API (finishReason {reason}){said}", refusal=True)
        raise AnswerError(f"the response holds no image (finishReason {reason}){said}")

    @staticmethod
    def usage(payload: Any) -> dict:
        """``usageMetadata`` (prompt, candidate and total token counts), or {}; reported for refusals too."""
        usage = payload.get("usageMetadata") if isinstance(payload, dict) else None
        return usage if isinstance(usage, dict) else {}

    @staticmethod
    def rejection(exc: Rejected) -> AnswerError:
        """A 4xx for the row; Gemini answers a bad key with 400 API_KEY_INVALID, which stops the run."""
        if _reason(exc.payload) == "API_KEY_INVALID":
            raise Unauthorized(str(exc), exc.status)
        return AnswerError(f"the API rejected the request ({error_code(exc.payload) or exc.status}): {exc}")

    def check_call(self) -> EditCall:
        """``GET {root}/v1beta/models/{model}``: the model exists and the key works; nothing is generated."""
        return EditCall("GET", f"{self.base_url}/models/{self.model}")

    def check_answer(self, payload: Any) -> str:
        name = payload.get("displayName") if isinstance(payload, dict) else None
        return f"{self.base_url} answers; model {self.model!r} is available" + (f" ({name})" if name else "")

    def describe(self) -> dict:
        return {"api_url": self.root_url, "model": self.model, "extra_body": self.extra_body}


def _reason(payload: Any) -> Optional[str]:
    """``error.details[].reason`` of a Google API error body."""
    error = payload.get("error") if isinstance(payload, dict) else None
    for detail in (error.get("details") or []) if isinstance(error, dict) else []:
        if isinstance(detail, dict) and detail.get("reason"):
            return str(detail["reason"])
    return None
