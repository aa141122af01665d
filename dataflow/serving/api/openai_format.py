"""OpenAI's image edit request: multipart ``POST {base}/images/edits``, answered with ``data[].b64_json``.

The same endpoint is served by self-hosted OpenAI-compatible servers (vLLM-omni, SGLang diffusion), which take
extra form fields such as ``seed``, ``num_inference_steps``, ``guidance_scale``, ``true_cfg_scale`` and
``negative_prompt``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from dataflow.http.errors import Rejected, error_code
from dataflow.http.urls import api_root
from dataflow.serving.api.edit_format import (
    AnswerError,
    EditAnswer,
    EditCall,
    decode_base64,
    field_value,
)

DEFAULT_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-image-1"
# error.code values of a safety / content-policy refusal (OpenAI; Azure OpenAI says content_filter)
REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation", "content_filter"})
RESERVED_FIELDS = frozenset({"prompt", "model", "n", "image", "image[]", "size", "quality"})


def openai_base_url(url: str) -> str:
    """The API root of an images URL (``api_root``'s rule): ``/v1`` added when absent, never doubled, and a URL
    already naming the endpoint (``.../v1/images/edits``) cut back to its root."""
    return api_root(url, ("/images/edits", "/images/generations"))


class OpenAIEditFormat:
    """Requests and answers of ``/images/edits``.

    Args:
        api_url: the API root, with or without ``/v1``.
        model: sent as the ``model`` field.
        size, quality: sent when given (``"1024x1024"``, ``"high"`` ...).
        extra_body: more form fields, sent as they are (numbers as text, objects as JSON).
    """

    name = "openai"
    default_url = DEFAULT_URL
    default_model = DEFAULT_MODEL
    images_per_call: Optional[int] = None  # ``n`` images come back from one request
    reserved_fields = RESERVED_FIELDS  # set by the serving's own arguments, not by extra_body

    def __init__(self, api_url: str, model: str, size: Optional[str] = None, quality: Optional[str] = None,
                 extra_body: Optional[dict] = None):
        self.base_url = openai_base_url(api_url)
        self.model = model
        self.size = size
        self.quality = quality
        self.extra_body = dict(extra_body or {})

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/images/edits"

    @staticmethod
    def headers(key: str) -> dict:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def edit_call(self, pngs: Sequence[bytes], prompt: str, n: int, seed: Optional[int] = None) -> EditCall:
        """One multipart request for ``n`` images; one image goes as ``image``, several as repeated ``image[]``."""
        name = "image" if len(pngs) == 1 else "image[]"
        files = [(name, (f"image_{i}.png", png, "image/png")) for i, png in enumerate(pngs)]
        fields: dict[str, Any] = {"prompt": prompt, "model": self.model, "n": n}
        if self.size is not None:
            fields["size"] = self.size
        if self.quality is not None:
            fields["quality"] = self.quality
        fields.update(self.extra_body)
        if seed is not None:
            fields["seed"] = seed
        return EditCall("POST", self.endpoint, data={k: field_value(v) for k, v in fields.items()}, files=files)

    def read_answer(self, payload: Any) -> EditAnswer:
        """The images of ``data[]``: base64 bytes, or URLs to fetch."""
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or not data:
            raise AnswerError("the response holds no image (no 'data' entries)")
        images = []
        for number, item in enumerate(data):
            if isinstance(item, dict) and item.get("b64_json"):
                images.append(decode_base64(item["b64_json"], f"data[{number}].b64_json"))
            elif isinstance(item, dict) and isinstance(item.get("url"), str) and item["url"]:
                images.append(item["url"])
            else:
                raise AnswerError(f"the response's data[{number}] holds neither b64_json nor url")
        return EditAnswer(images)

    @staticmethod
    def usage(payload: Any) -> dict:
        """The ``usage`` object (token counts of GPT image models), or {}."""
        usage = payload.get("usage") if isinstance(payload, dict) else None
        return usage if isinstance(usage, dict) else {}

    @staticmethod
    def rejection(exc: Rejected) -> AnswerError:
        """What a 4xx means for the row: a refusal (``moderation_blocked`` ...) or another bad request."""
        code = error_code(exc.payload)
        refused = code in REFUSAL_CODES or "safety system" in str(exc).lower()
        label = f"refused by the API ({code})" if refused and code else "refused by the API" if refused \
            else "the API rejected the request"
        return AnswerError(f"{label}: {exc}", refusal=refused)

    def check_call(self) -> EditCall:
        """``GET {base}/models``: reaches the server and checks the key without generating anything."""
        return EditCall("GET", f"{self.base_url}/models")

    def check_answer(self, payload: Any) -> str:
        """A note on whether the server lists the model."""
        listed = [m.get("id") for m in payload.get("data", []) if isinstance(m, dict)] \
            if isinstance(payload, dict) and isinstance(payload.get("data"), list) else []
        if not listed or self.model in listed:
            return f"{self.base_url} answers; model {self.model!r}" + (" is listed" if listed else "")
        shown = ", ".join(map(str, listed[:5])) + (", ..." if len(listed) > 5 else "")
        return f"{self.base_url} answers, but lists no model {self.model!r} (it lists: {shown})"

    def describe(self) -> dict:
        """The request parameters that decide the output, for the fingerprint."""
        return {"api_url": self.base_url, "model": self.model, "size": self.size, "quality": self.quality,
                "extra_body": self.extra_body}
