"""``APIEditServing``: image editing by a remote API (OpenAI's ``/images/edits`` or Gemini), one request per row.

The engine runs up to ``concurrency`` (``max_concurrency``) ``edit`` calls at once from threads, each with one
row, so every row's result reaches the checkpoint as soon as its own request completes. ``edit`` is thread-safe:
the ``HTTPClient`` (one ``httpx.Client``) is shared and the counters sit behind a lock. The engine hands over each
reference image's file too, which is sent as it is when the service takes it (``upload``).
"""

from __future__ import annotations

import io
from typing import Any, Optional, Sequence

from dataflow.core.errors import InputError, ModelLoadError, ServiceError
from dataflow.core.request import EditRequest, EditResult
from dataflow.core.seeding import image_seed
from dataflow.core.serving import ImageEditServing
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
    check_extra_body,
    check_seconds,
    json_or_none,
    redact,
)
from dataflow.serving.api.edit_format import AnswerError, EditAnswer, EditCall, short
from dataflow.serving.api.gemini_format import GeminiEditFormat
from dataflow.serving.api.openai_format import OpenAIEditFormat
from dataflow.serving.api.upload import upload_of

FORMATS = {"openai": OpenAIEditFormat, "gemini": GeminiEditFormat}
KEY_VARIABLE = "DF_API_KEY"
SEED_RANGE = 2**31  # Gemini's seed is an int32; OpenAI-compatible servers take any integer


class APIEditServing(ImageEditServing):
    """Edit rows with a remote image edit API.

    Args:
        api_format: "openai" (``POST {base}/images/edits``; OpenAI, vLLM-omni, SGLang) or "gemini".
        api_url: the API root; default OpenAI's ``https://api.openai.com/v1`` or Gemini's
            ``https://generativelanguage.googleapis.com``. ``/v1`` is added to an OpenAI URL without one.
        model: the model name; default ``gpt-image-2.5-sunburst`` (openai) or ``gemini-2.5-flash-image`` (gemini).
            A model the service says does not exist stops the run, naming it and the current models.
        api_key: the key; none is sent when empty (self-hosted servers), and a 401 then stops the run.
        num_images_per_prompt: edited images per row: ``n`` of one request (openai, up to 10 per request), one
            request each (gemini).
        size, quality, input_fidelity, background: OpenAI's fields, sent when given (see ``OpenAIEditFormat``;
            ``size="match_input"``: the standard size nearest the first image's aspect ratio).
        aspect_ratio, image_size: Gemini's ``imageConfig``, sent when given (see ``GeminiEditFormat``;
            ``"match_input"``: chosen from the first image).
        multi_turn: Gemini: edit a row's user turns one after another, each turn's image feeding the next; the
            row's output is the last turn's image.
        extra_body: more fields for the server (openai: form fields such as ``num_inference_steps``,
            ``guidance_scale``, ``true_cfg_scale``, ``negative_prompt``; gemini: merged into the JSON body).
            A ``seed`` is not sent as given: each request gets ``image_seed(seed, row key, k) % 2**31``, so a
            row's result does not depend on which rows ran with it.
        max_concurrency: requests in flight at once.
        max_retries: retries of a request after 429, 5xx, a timeout or a lost connection.
        timeout: seconds to wait for an answer; connect_timeout: seconds to wait for a connection.
        retry_delay: the first backoff in seconds (doubling, with jitter, at most 60 s); a ``Retry-After`` header
            overrides it (up to 120 s; a longer wait fails the row at once).
        image_io: where the driver saves the edited images.
    """

    batch_size = 1
    max_instruction_chars = 32_000  # the longest prompt OpenAI's GPT image models take
    max_input_images = None  # the format's own limit is each row's error (``edit_one``)
    wants_source_files = True

    def __init__(self, api_format: str = "openai", api_url: Optional[str] = None, model: Optional[str] = None,
                 api_key: Optional[str] = None, *, num_images_per_prompt: int = 1, size: Optional[str] = None,
                 quality: Optional[str] = None, input_fidelity: Optional[str] = None,
                 background: Optional[str] = None, aspect_ratio: Optional[str] = None,
                 image_size: Optional[str] = None, multi_turn: bool = False, extra_body: Optional[dict] = None,
                 max_concurrency: int = 8, max_retries: int = 5, timeout: float = 300, connect_timeout: float = 30,
                 retry_delay: float = 1.0, image_io: Any = None):
        if api_format not in FORMATS:
            raise InputError(f"api_format must be one of {', '.join(FORMATS)}, got {api_format!r}")
        check_positive_int(num_images_per_prompt=num_images_per_prompt, max_concurrency=max_concurrency)
        check_seconds(timeout=timeout, connect_timeout=connect_timeout)
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise InputError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if not isinstance(retry_delay, (int, float)) or isinstance(retry_delay, bool) or retry_delay < 0:
            raise InputError(f"retry_delay must be a number of seconds >= 0, got {retry_delay!r}")
        kind = FORMATS[api_format]
        extra = check_extra_body(extra_body, kind.reserved_fields)
        self.seed = extra.pop("seed", None)
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise InputError(f"extra_body's seed must be an integer, got {self.seed!r}")
        self.api_format = api_format
        options = {"size": size, "quality": quality, "input_fidelity": input_fidelity, "background": background,
                   "aspect_ratio": aspect_ratio, "image_size": image_size, "multi_turn": multi_turn or None}
        given = {name: value for name, value in options.items() if value is not None}
        foreign = [name for name in given if name not in kind.options]
        if foreign:
            raise InputError(f"{', '.join(foreign)} {'is not an option' if len(foreign) == 1 else 'are not options'}"
                             f" of the {api_format} format; it takes {', '.join(kind.options)}")
        self.format = kind(api_url or kind.default_url, model, extra, **given)
        self.num_images_per_request = num_images_per_prompt
        self.concurrency = max_concurrency
        self.image_io = image_io
        self._http = SharedClient(api_key, timeout, connect_timeout, max_concurrency,
                                  RetryPolicy(max_retries=max_retries, base_delay=float(retry_delay)))

    # -- identity --------------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self.format.model

    @property
    def api_url(self) -> str:
        return self.format.base_url

    @property
    def wants_earlier_turns(self) -> bool:
        """Multi-turn editing needs every user turn of the row's conversation."""
        return self.format.multi_turn

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(api_format={self.api_format!r}, api_url={self.api_url!r}, "
                f"model={self.model!r}, max_concurrency={self.concurrency})")

    def fingerprint(self) -> dict:
        """Format, URL, model and every generation parameter; never the key."""
        return {"serving": "api", "api_format": self.api_format, **self.format.describe(),
                "num_images_per_prompt": self.num_images_per_request, "seed": self.seed}

    def usage(self) -> dict:
        """Requests sent (retries included), retries, refusals, images received, the bytes sent, and the API's
        usage sums."""
        return self._http.usage(("requests", "retries", "refusals", "images", "request_bytes"))

    def client(self) -> HTTPClient:
        """The shared client (see ``SharedClient``)."""
        return self._http.get()

    def close(self) -> None:
        self._http.close()

    def check_model(self) -> Optional[str]:
        """Reach the API and check the key and model without generating (``GET .../models``); a note back."""
        call = self.format.check_call()
        checker = self._http.checker()
        try:
            response = self._send(checker, call)
        except (RequestFailed, AnswerError) as exc:
            raise ModelLoadError(f"the API check failed: {exc}") from None
        finally:
            checker.close()
        return self.format.check_answer(json_or_none(response))

    # -- editing ---------------------------------------------------------------------------------------
    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        """One result per request, in order; the engine passes one row per call."""
        return [self.edit_one(request) for request in requests]

    def edit_one(self, request: EditRequest) -> EditResult:
        """The row's images, or its error (a refusal, no image, retries exhausted); ``ServiceError`` stops the run."""
        limit = self.format.max_images
        if limit is not None and len(request.images) > limit:
            return EditResult(error=f"this row has {len(request.images)} images; the {self.api_format} format "
                                    f"takes at most {limit} per request")
        files = request.files or (None,) * len(request.images)
        uploads = [upload_of(image, source) for image, source in zip(request.images, files)]
        shape = request.image.size
        images: list = []
        try:
            for k, n in self._calls(request.num_images):
                seed = None if self.seed is None else image_seed(self.seed, request.key, k) % SEED_RANGE
                if self.format.multi_turn:
                    answer = self._turns(uploads, [*request.earlier_turns, request.instruction], seed, shape)
                else:
                    answer = self._answer(self.format.edit_call(uploads, request.instruction, n, seed, shape))
                images += [self._image(item) for item in answer.images]
        except AnswerError as exc:
            if exc.refusal:
                self._http.counters.add("refusals")
            return EditResult(error=str(exc), final=exc.refusal)
        except RequestFailed as exc:
            return EditResult(error=str(exc))
        self._http.counters.add("images", len(images))
        if len(images) < request.num_images:
            return EditResult(error=f"asked for {request.num_images} images, the API returned {len(images)}")
        return EditResult(images=images[: request.num_images])

    def _turns(self, uploads: list, turns: list, seed: Optional[int], shape: tuple) -> EditAnswer:
        """Edit turn by turn in one conversation: each request holds the earlier turns and the model's answers,
        so each turn edits the previous turn's image; the last turn's answer. A turn without an image ends the
        row, saying which turn it was."""
        contents: list = []
        answer = EditAnswer()
        for number, text in enumerate(turns, 1):
            contents.append(self.format.user_turn(uploads if number == 1 else [], text))
            try:
                answer, payload = self._answer_and_payload(self.format.turn_call(contents, seed, shape))
            except AnswerError as exc:
                if len(turns) == 1:
                    raise
                raise AnswerError(f"turn {number} of {len(turns)}: {exc}", refusal=exc.refusal) from None
            contents.append(self.format.model_turn(payload))
        return answer

    def _calls(self, n: int) -> list[tuple[int, int]]:
        """(index of the first image, images) of each request a row needs."""
        per_call = self.format.images_per_call or n
        return [(k, min(per_call, n - k)) for k in range(0, n, per_call)]

    def _answer(self, call: EditCall) -> EditAnswer:
        return self._answer_and_payload(call)[0]

    def _answer_and_payload(self, call: EditCall) -> tuple[EditAnswer, Any]:
        response = self._send(self.client(), call)
        payload = json_or_none(response)
        if payload is None:
            text = short(redact(response.text, (self._http.key,)), 200)
            raise AnswerError(f"the API answered HTTP {response.status_code} with malformed JSON: {text!r}")
        self._http.counters.add_usage(self.format.usage(payload))
        return self.format.read_answer(payload), payload

    def _send(self, client: HTTPClient, call: EditCall) -> Any:
        """Send ``call`` with the key's header; turn a 4xx into the row's ``AnswerError`` or a run-stopping
        ``ServiceError`` that says what to check."""
        try:
            try:
                return client.request(call.method, call.url, headers=self.format.headers(self._http.key.reveal()),
                                      json=call.json, data=call.data, files=call.files)
            except Rejected as exc:
                rejection = self.format.rejection(exc)  # may itself be Unauthorized (Gemini's API_KEY_INVALID)
            raise rejection
        except Unauthorized as exc:
            hint = (f"the API key was refused; check {KEY_VARIABLE}" if self._http.key
                    else f"no API key was given; set {KEY_VARIABLE}")
            raise ServiceError(f"{exc} ({hint})") from None
        except ModelNotFound as exc:
            raise ServiceError(f"the model {self.model!r} does not exist at {self.api_url} ({exc.detail}); "
                               f"{self.format.missing_model()}") from None
        except NotFound as exc:
            raise ServiceError(f"{exc} (check the model name {self.model!r} and the API URL "
                               f"{self.api_url!r})") from None

    def _image(self, item: Any) -> Any:
        """A PIL RGB image from answer bytes, or from a URL fetched without the key."""
        from PIL import Image, UnidentifiedImageError

        if isinstance(item, str):
            try:
                item = self.client().request("GET", item, follow_redirects=True).content
            except (Unauthorized, NotFound) as exc:
                raise AnswerError(f"cannot download the edited image: {exc}") from None
        try:
            with Image.open(io.BytesIO(item)) as image:
                image.load()
                if self.format.keeps_alpha and (image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info):
                    return image.convert("RGBA")  # a transparent background was asked for: keep it
                return image.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise AnswerError(f"the API returned an image that cannot be decoded: {exc}") from None
