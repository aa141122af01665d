"""Gemini's image edit request: ``POST {root}/{version}/models/{model}:generateContent`` with ``x-goog-api-key``.

The reference images go as inline data parts, followed by the instruction as a text part; the edited image comes
back as an inline data part of the first candidate. An answer without one is that row's error, carrying the
model's words: a blocked prompt (``promptFeedback.blockReason``), a safety ``finishReason``, or text alone. The
REST API answers in camelCase; proxies and SDK dumps in snake_case (``prompt_feedback.block_reason``,
``finish_reason``, ``usage_metadata``), which are read the same.

Gemini's image models return one image per request (``candidateCount`` > 1 is refused for them), so several
images per row are several requests. The image configuration (``generationConfig.imageConfig``: ``aspectRatio``,
``imageSize``) and the values it takes are those of the ``google-genai`` SDK (3.6, ``types.ImageConfig``).

Multi-turn editing sends a row's user turns one after another in one conversation, as the SDK's chats do: each
request holds every earlier turn and the model's answers to them as they came (thought signatures included),
so each turn edits the image the previous one made.
"""

from __future__ import annotations

import base64
import re
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
from dataflow.serving.api.sizes import MATCH_INPUT, nearest_aspect, nearest_edge
from dataflow.serving.api.upload import Upload

DEFAULT_URL = "https://generativelanguage.googleapis.com"
DEFAULT_MODEL = "gemini-2.5-flash-image"
CURRENT_MODELS = ("gemini-2.5-flash-image", "gemini-3.1-flash-image", "gemini-3.1-flash-lite-image",
                  "gemini-3-pro-image")
DEFAULT_VERSION = "v1beta"
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9")
IMAGE_SIZES = {"1K": 1024, "2K": 2048, "4K": 4096}  # the long edge each names
# finishReason values that mean the model declined for safety or policy reasons
REFUSAL_FINISH_REASONS = frozenset({
    "SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT", "BLOCKLIST", "SPII",
    "RECITATION", "IMAGE_RECITATION",
})
# root, then an optional version segment, then an optional models/{model}[:method]: what users paste
_URL = re.compile(r"^(?P<root>.+?)(?:/(?P<version>v\d+(?:alpha|beta)?\d*))?"
                  r"(?:/models/(?P<model>[^/:]+)(?::[A-Za-z]+)?)?$")


def split_gemini_url(url: str) -> tuple[str, Optional[str], Optional[str]]:
    """(root, version, model) of a Gemini URL: a root (``https://generativelanguage.googleapis.com``), a root with
    its version (``.../v1beta``, ``.../v1``) or a full endpoint (``.../v1beta/models/M:generateContent``)."""
    url = check_base_url(url)
    match = _URL.match(url)
    return match.group("root"), match.group("version"), match.group("model")


def gemini_root_url(url: str) -> str:
    """The API root without its version segment or endpoint."""
    return split_gemini_url(url)[0]


def deep_merge(base: dict, extra: dict) -> dict:
    """``base`` updated by ``extra``, merging nested objects key by key."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def camel_case(value: Any) -> Any:
    """``value`` with every object key in camelCase (``usage_metadata`` -> ``usageMetadata``), recursively."""
    if isinstance(value, dict):
        return {re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), str(k)): camel_case(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel_case(v) for v in value]
    return value


class GeminiEditFormat:
    """Requests and answers of ``generateContent`` for Gemini's image models.

    Args:
        api_url: the API root (``https://generativelanguage.googleapis.com``), with or without a version segment
            (``/v1beta``, the default, or ``/v1``, kept as given), or the full endpoint
            (``.../v1beta/models/gemini-2.5-flash-image:generateContent``), whose model is used when ``model``
            is not given.
        model: the model in the path; default ``gemini-2.5-flash-image``.
        extra_body: merged into the request body, objects key by key: e.g. ``{"safetySettings": [...]}``.
        aspect_ratio: ``generationConfig.imageConfig.aspectRatio``: one of ``ASPECT_RATIOS``, or ``match_input``:
            the one nearest the row's first image. Not sent when None (the model's default).
        image_size: ``imageConfig.imageSize``: ``1K``, ``2K`` or ``4K``, or ``match_input``: the one nearest the
            first image's long side. Not sent when None (``1K``).
        multi_turn: edit a row's user turns one after another in one conversation (see the module's text).
    """

    name = "gemini"
    default_url = DEFAULT_URL
    default_model = DEFAULT_MODEL
    images_per_call: Optional[int] = 1
    max_images: Optional[int] = None
    reserved_fields = frozenset({"contents"})
    options = ("aspect_ratio", "image_size", "multi_turn")
    keeps_alpha = False

    def __init__(self, api_url: str, model: Optional[str] = None, extra_body: Optional[dict] = None, *,
                 aspect_ratio: Optional[str] = None, image_size: Optional[str] = None, multi_turn: bool = False):
        self.root_url, version, url_model = split_gemini_url(api_url)
        self.version = version or DEFAULT_VERSION
        model = model.removeprefix("models/") if model else None
        if model and url_model and model != url_model:
            raise InputError(f"api_url names the model {url_model!r} but the model given is {model!r}; give one")
        self.model = model or url_model or DEFAULT_MODEL
        for name, value, choices in (("aspect_ratio", aspect_ratio, ASPECT_RATIOS),
                                     ("image_size", image_size, tuple(IMAGE_SIZES))):
            if value is not None and value not in (*choices, MATCH_INPUT):
                raise InputError(f"{name} must be one of {', '.join(choices)} or {MATCH_INPUT}, got {value!r}")
        self.aspect_ratio = aspect_ratio
        self.image_size = image_size
        self.multi_turn = bool(multi_turn)
        self.extra_body = dict(extra_body or {})

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/{self.version}"

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/models/{self.model}:generateContent"

    @staticmethod
    def headers(key: str) -> dict:
        return {"x-goog-api-key": key} if key else {}

    # -- requests ------------------------------------------------------------------------------------------
    @staticmethod
    def user_turn(uploads: Sequence[Upload], text: str) -> dict:
        """A user turn: the images as inline data (none after the first turn), then the text."""
        parts: list[dict] = [
            {"inline_data": {"mime_type": upload.mime, "data": base64.b64encode(upload.data).decode("ascii")}}
            for upload in uploads
        ]
        parts.append({"text": text})
        return {"role": "user", "parts": parts}

    @staticmethod
    def model_turn(payload: Any) -> dict:
        """The model's answer as it came, to go back in the next turn's history (thought signatures and all)."""
        candidate = camel_case(payload)["candidates"][0]
        return {**candidate.get("content", {}), "role": "model"}

    def edit_call(self, uploads: Sequence[Upload], prompt: str, n: int, seed: Optional[int] = None,
                  shape: Optional[tuple] = None) -> EditCall:
        """One request for one image (``n`` must be 1); ``shape`` is the first image's (width, height)."""
        if n != 1:
            raise ValueError("Gemini image models return one image per request")
        return self.turn_call([self.user_turn(uploads, prompt)], seed, shape)

    def turn_call(self, contents: list, seed: Optional[int] = None, shape: Optional[tuple] = None) -> EditCall:
        """One request holding the conversation ``contents`` (one user turn, or the history of a multi-turn edit)."""
        config: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
        if seed is not None:
            config["seed"] = seed
        image_config = self.image_config(shape)
        if image_config:
            config["imageConfig"] = image_config
        body = deep_merge({"contents": contents, "generationConfig": config}, self.extra_body)
        return EditCall("POST", self.endpoint, json=body)

    def image_config(self, shape: Optional[tuple]) -> dict:
        """``imageConfig`` for a row whose first image is ``shape`` (width, height)."""
        config = {}
        if self.aspect_ratio is not None:
            config["aspectRatio"] = nearest_aspect(*shape, ASPECT_RATIOS, ":") \
                if self.aspect_ratio == MATCH_INPUT else self.aspect_ratio
        if self.image_size is not None:
            config["imageSize"] = nearest_edge(*shape, IMAGE_SIZES) \
                if self.image_size == MATCH_INPUT else self.image_size
        return config

    # -- answers -------------------------------------------------------------------------------------------
    def read_answer(self, payload: Any) -> EditAnswer:
        """The first final (non-thought) inline image of the first candidate."""
        if not isinstance(payload, dict):
            raise AnswerError("the response is not a JSON object")
        payload = camel_case(payload)
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
            inline = part.get("inlineData")
            if isinstance(inline, dict):
                if str(inline.get("mimeType") or "").startswith("image/"):
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
        """``usageMetadata`` (prompt, candidate and total token counts; snake_case read as camelCase), or {};
        reported for refusals too."""
        usage = camel_case(payload).get("usageMetadata") if isinstance(payload, dict) else None
        return usage if isinstance(usage, dict) else {}

    @staticmethod
    def rejection(exc: Rejected) -> AnswerError:
        """A 4xx for the row; Gemini answers a bad key with 400 API_KEY_INVALID, which stops the run."""
        if _reason(exc.payload) == "API_KEY_INVALID":
            raise Unauthorized(str(exc), exc.status)
        return AnswerError(f"the API rejected the request ({error_code(exc.payload) or exc.status}): {exc}")

    def check_call(self) -> EditCall:
        """``GET {root}/{version}/models/{model}``: the model exists and the key works; nothing is generated."""
        return EditCall("GET", f"{self.base_url}/models/{self.model}")

    def check_answer(self, payload: Any) -> str:
        name = payload.get("displayName") if isinstance(payload, dict) else None
        return f"{self.base_url} answers; model {self.model!r} is available" + (f" ({name})" if name else "")

    def missing_model(self) -> str:
        """What to say when the service answers that the model does not exist."""
        return f"current Gemini image models: {', '.join(CURRENT_MODELS)}; the server's own: GET {self.base_url}/models"

    def describe(self) -> dict:
        """What decides the output, for the fingerprint; the default version and the options added since the
        first version appear only when set, so that the fingerprints of earlier runs stay the same."""
        described = {"api_url": self.root_url if self.version == DEFAULT_VERSION else self.base_url,
                     "model": self.model, "extra_body": self.extra_body}
        for name in ("aspect_ratio", "image_size"):
            if getattr(self, name) is not None:
                described[name] = getattr(self, name)
        if self.multi_turn:
            described["multi_turn"] = True
        return described


def _reason(payload: Any) -> Optional[str]:
    """``error.details[].reason`` of a Google API error body."""
    error = payload.get("error") if isinstance(payload, dict) else None
    for detail in (error.get("details") or []) if isinstance(error, dict) else []:
        if isinstance(detail, dict) and detail.get("reason"):
            return str(detail["reason"])
    return None
