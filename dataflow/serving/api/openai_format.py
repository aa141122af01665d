"""OpenAI's image edit request: multipart ``POST {base}/images/edits``, answered with ``data[].b64_json``.

The same endpoint is served by self-hosted OpenAI-compatible servers (vLLM-omni, SGLang diffusion), which take
extra form fields such as ``seed``, ``num_inference_steps``, ``guidance_scale``, ``true_cfg_scale`` and
``negative_prompt``.

The models and parameters are those of OpenAI's Python SDK (``openai/types/image_model.py`` and
``image_edit_params.py``, 3.63): GPT Image 1 was shut down on 2026-10-23 and DALL·E 2 and 3 retired on
2026-05-12; the GPT image models take up to 16 input images, ``n`` up to 10, ``quality``, ``input_fidelity``,
``background`` and ``size`` (``auto``, the standard sizes, or any ``WIDTHxHEIGHT`` for the 2.x models).
"""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence

from dataflow.core.errors import InputError
from dataflow.http.errors import Rejected, error_code
from dataflow.http.urls import api_root
from dataflow.serving.api.edit_format import (
    AnswerError,
    EditAnswer,
    EditCall,
    decode_base64,
    field_value,
)
from dataflow.serving.api.sizes import MATCH_INPUT, nearest_aspect
from dataflow.serving.api.upload import Upload

DEFAULT_URL = "https://api.openai.com/v1"
# The successor OpenAI's own shutdown notice of gpt-image-1 names first, documented for every option sent here.
DEFAULT_MODEL = "gpt-image-2.5-sunburst"
CURRENT_MODELS = ("gpt-image-2.5-sunburst", "gpt-image-2.5-flare", "gpt-image-2.6-sunburst", "gpt-image-2.6-flare",
                  "gpt-image-2", "gpt-image-1.5", "gpt-image-1-mini", "chatgpt-image-latest")
RETIRED_MODELS = {"gpt-image-1": "was shut down on 2026-10-23", "dall-e-2": "was retired on 2026-05-12",
                  "dall-e-3": "was retired on 2026-05-12"}
MAX_IMAGES = 16  # input images per request
MAX_N = 10  # images per request; more are asked in several requests
QUALITIES = ("low", "medium", "high", "xhigh", "max", "auto")  # xhigh and max: the gpt-image-2.5 models
INPUT_FIDELITIES = ("high", "low")  # gpt-image-1.5 and -1-mini; omit for gpt-image-2
BACKGROUNDS = ("transparent", "opaque", "auto")
STANDARD_SIZES = ("1024x1024", "1536x1024", "1024x1536")  # every GPT image model takes these
_SIZE = re.compile(r"^[1-9]\d*x[1-9]\d*$")
# error.code values of a safety / content-policy refusal (OpenAI; Azure OpenAI says content_filter)
REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation", "content_filter"})
RESERVED_FIELDS = frozenset({"prompt", "model", "n", "image", "image[]", "size", "quality", "input_fidelity",
                             "background"})


def openai_base_url(url: str) -> str:
    """The API root of an images URL (``api_root``'s rule): ``/v1`` added when absent, never doubled, and a URL
    already naming the endpoint (``.../v1/images/edits``) cut back to its root."""
    return api_root(url, ("/images/edits", "/images/generations"))


def check_choice(name: str, value: Optional[str], choices: Sequence[str]) -> Optional[str]:
    """``value`` when it is None or one of ``choices``; an ``InputError`` naming them otherwise."""
    if value is not None and value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_size(size: Optional[str]) -> Optional[str]:
    """``auto``, ``match_input`` or ``WIDTHxHEIGHT``; the service says which sizes its model takes."""
    if size is None or size in ("auto", MATCH_INPUT) or (isinstance(size, str) and _SIZE.match(size)):
        return size
    raise InputError(f"size must be auto, {MATCH_INPUT} or WIDTHxHEIGHT (e.g. {', '.join(STANDARD_SIZES)}), "
                     f"got {size!r}")


class OpenAIEditFormat:
    """Requests and answers of ``/images/edits``.

    Args:
        api_url: the API root, with or without ``/v1``.
        model: sent as the ``model`` field; default ``gpt-image-2.5-sunburst``.
        extra_body: more form fields, sent as they are (numbers as text, objects as JSON).
        size: ``auto``, ``WIDTHxHEIGHT`` (the standard ``1024x1024``, ``1536x1024``, ``1024x1536``; the 2.x
            models take others), or ``match_input``: the standard size nearest the row's first image's aspect
            ratio. Not sent when None (the service's default, ``auto``).
        quality: ``low``, ``medium``, ``high``, ``auto`` (``xhigh``, ``max``: the 2.5 models).
        input_fidelity: ``high`` or ``low``: how closely the edit keeps the input's features (faces); not for
            ``gpt-image-2``.
        background: ``transparent``, ``opaque`` or ``auto``; a transparent result is saved with its alpha.
    """

    name = "openai"
    default_url = DEFAULT_URL
    default_model = DEFAULT_MODEL
    images_per_call: Optional[int] = MAX_N  # ``n`` images come back from one request
    max_images: Optional[int] = MAX_IMAGES
    multi_turn = False
    reserved_fields = RESERVED_FIELDS  # set by the serving's own arguments, not by extra_body
    options = ("size", "quality", "input_fidelity", "background")

    def __init__(self, api_url: str, model: Optional[str] = None, extra_body: Optional[dict] = None, *,
                 size: Optional[str] = None, quality: Optional[str] = None, input_fidelity: Optional[str] = None,
                 background: Optional[str] = None):
        self.base_url = openai_base_url(api_url)
        self.model = model or DEFAULT_MODEL
        self.size = check_size(size)
        self.quality = check_choice("quality", quality, QUALITIES)
        self.input_fidelity = check_choice("input_fidelity", input_fidelity, INPUT_FIDELITIES)
        self.background = check_choice("background", background, BACKGROUNDS)
        self.extra_body = dict(extra_body or {})

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/images/edits"

    @property
    def keeps_alpha(self) -> bool:
        """Whether answers keep their transparency (a transparent background was asked for)."""
        return self.background == "transparent"

    @staticmethod
    def headers(key: str) -> dict:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def edit_call(self, uploads: Sequence[Upload], prompt: str, n: int, seed: Optional[int] = None,
                  shape: Optional[tuple] = None) -> EditCall:
        """One multipart request for ``n`` images; one image goes as ``image``, several as repeated ``image[]``.
        ``shape`` is the first image's (width, height), for ``size="match_input"``."""
        name = "image" if len(uploads) == 1 else "image[]"
        files = [(name, (upload.filename(i), upload.data, upload.mime)) for i, upload in enumerate(uploads)]
        fields: dict[str, Any] = {"prompt": prompt, "model": self.model, "n": n}
        size = nearest_aspect(*shape, STANDARD_SIZES, "x") if self.size == MATCH_INPUT and shape else self.size
        for field, value in (("size", size), ("quality", self.quality), ("input_fidelity", self.input_fidelity),
                             ("background", self.background)):
            if value is not None:
                fields[field] = value
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

    def missing_model(self) -> str:
        """What to say when the service answers that the model does not exist."""
        retired = RETIRED_MODELS.get(self.model)
        current = f"current GPT image models: {', '.join(CURRENT_MODELS)}"
        if retired:
            return f"{self.model} {retired}; {current}"
        return f"{current} (OpenAI's API); the server's own: GET {self.base_url}/models"

    def describe(self) -> dict:
        """The request parameters that decide the output, for the fingerprint; options added since the first
        version appear only when set, so that the fingerprints of earlier runs stay the same."""
        described = {"api_url": self.base_url, "model": self.model, "size": self.size, "quality": self.quality,
                     "extra_body": self.extra_body}
        for name in ("input_fidelity", "background"):
            if getattr(self, name) is not None:
                described[name] = getattr(self, name)
        return described
