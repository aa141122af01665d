"""A local image edit API on 127.0.0.1 speaking OpenAI's ``/v1/images/edits`` and Gemini's ``generateContent``.

Its "edit" is a deterministic function of the input image and the prompt (``expected_edit``), so tests check
pixel by pixel that each row got its own answer. It counts requests in flight, records every request, and injects
faults: per prompt, a queue of one-off faults (``server.inject(prompt, "429", "500")``) or, for every request, a
marker in the prompt (``REFUSE``, ``NOIMAGE``, ``BLOCK``, ``BADREQ``, ``ECHOKEY``).

It serves Gemini under ``/v1beta`` and ``/v1``, answers in snake_case when ``snake_case`` is set (as proxies and
SDK dumps do), and takes multi-turn conversations: a later turn edits the image of the model's last answer, which
must come back as it was sent (its thought signature included). A model it does not serve gets each API's own
404 ("The model `x` does not exist", "models/x is not found for API version v1beta").
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import Optional

import numpy as np
import pytest
from PIL import Image

from tests.loopback import LoopbackServer

FAULTS = ("429", "429-date", "500", "503", "slow", "drop", "badjson", "noimage", "refuse")
MODEL = "test-model"


def expected_edit(images, prompt: str, k: int = 0, seed: Optional[int] = None) -> np.ndarray:
    """The server's edit of ``images`` (PIL or arrays): the first inverted and shifted by a value of the prompt,
    the output's index ``k`` and the seed."""
    first = np.asarray(images[0], dtype=np.int16)
    shift = zlib.crc32(f"{prompt}\x1f{k}\x1f{seed}".encode()) % 251 + 1
    return ((255 - first + shift) % 256).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@dataclass
class Received:
    """One request as the server saw it."""

    kind: str  # "openai", "gemini", "models", "model", "file"
    path: str
    headers: dict
    prompt: Optional[str] = None
    images: list = field(default_factory=list)  # the images edited: decoded RGB arrays
    image_field: Optional[str] = None
    fields: dict = field(default_factory=dict)
    body: dict = field(default_factory=dict)
    status: Optional[int] = None
    size: int = 0  # the request body's bytes
    uploads: list = field(default_factory=list)  # (MIME type, bytes) of each image as sent
    turns: int = 1  # user turns in a Gemini conversation


class EditServer(LoopbackServer):
    """The server; ``url`` is its root (``http://127.0.0.1:PORT``).

    Args:
        key: the API key it requires (None: none required).
        delay: seconds each edit request takes.
    """

    def __init__(self, key: Optional[str] = "test-key", delay: float = 0.0):
        self.key = key
        self.delay = delay
        self.slow_seconds = 1.0
        self.retry_after = "1"
        self.url_mode = False  # openai answers with data[].url instead of b64_json
        self.snake_case = False  # gemini answers in snake_case
        self.thumbnail: Optional[int] = None  # edit a copy of the input at most this wide and high (big inputs)
        self.models = {MODEL}
        self.models_status: Optional[int] = None  # GET /v1/models answers this status when set
        self.gate_after: Optional[int] = None  # edit requests after this many wait for ``gate``
        self.gate = threading.Event()
        self.received: list[Received] = []
        self.violations: list[str] = []  # requests that broke the API's shape
        self.in_flight = 0
        self.max_in_flight = 0
        self._faults: dict[str, list[str]] = {}
        self._files: dict[str, bytes] = {}
        self._lock = threading.Lock()
        super().__init__(_handler(self))

    def stop(self) -> None:
        self.gate.set()
        super().stop()

    def inject(self, prompt: str, *faults: str) -> None:
        """The next requests for ``prompt`` meet these faults, one each, then it is served normally."""
        assert all(f in FAULTS for f in faults), faults
        with self._lock:
            self._faults.setdefault(prompt, []).extend(faults)

    def edits(self) -> list[Received]:
        """Every edit request received (retries included), in arrival order."""
        with self._lock:
            return [r for r in self.received if r.kind in ("openai", "gemini")]

    def prompts(self) -> list[str]:
        return [r.prompt for r in self.edits()]

    # -- used by the handler -------------------------------------------------------------------------------
    def _record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)

    def _next_fault(self, prompt: str) -> Optional[str]:
        with self._lock:
            queue = self._faults.get(prompt)
            return queue.pop(0) if queue else None

    def _enter(self) -> int:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return sum(1 for r in self.received if r.kind in ("openai", "gemini"))

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _store_file(self, data: bytes) -> str:
        with self._lock:
            name = f"{len(self._files)}.png"
            self._files[name] = data
        return f"{self.url}/files/{name}"


class _Reply(Exception):
    """Raised inside the handler to answer at once."""

    def __init__(self, status: int, body, headers: Optional[dict] = None):
        self.status, self.body, self.headers = status, body, headers or {}


def _handler(server: EditServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        # -- plumbing ------------------------------------------------------------------------------------
        def _send(self, status: int, body, headers: Optional[dict] = None, content_type="application/json"):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def _headers(self) -> dict:
            return {k.lower(): v for k, v in self.headers.items()}

        # -- routes --------------------------------------------------------------------------------------
        def do_GET(self):
            received = Received("file" if self.path.startswith("/files/") else "models", self.path, self._headers())
            server._record(received)
            try:
                if self.path.startswith("/files/"):
                    data = server._files.get(self.path.rsplit("/", 1)[1])
                    if data is None:
                        raise _Reply(404, {"error": {"message": "no such file"}})
                    received.status = 200
                    return self._send(200, data, content_type="image/png")
                if self.path == "/v1/models":
                    self._check_openai_key()
                    if server.models_status:
                        raise _Reply(server.models_status, {"error": {"message": "models are unavailable"}})
                    raise _Reply(200, {"object": "list", "data": [{"id": m} for m in sorted(server.models)]})
                match = re.fullmatch(r"/(v1beta|v1)/models/([^/:]+)", self.path)
                if match:
                    received.kind = "model"
                    self._check_gemini_key()
                    model = match.group(2)
                    if model not in server.models:
                        raise _Reply(404, _gemini_missing(model, match.group(1)))
                    raise _Reply(200, {"name": f"models/{model}", "displayName": "Test model"})
                raise _Reply(404, {"error": {"message": f"no route {self.path}"}})
            except _Reply as reply:
                received.status = reply.status
                self._send(reply.status, reply.body, reply.headers)

        def do_POST(self):
            body = self._body()
            try:
                if self.path == "/v1/images/edits":
                    received = self._parse_openai(body)
                elif re.fullmatch(r"/(v1beta|v1)/models/[^/:]+:generateContent", self.path):
                    received = self._parse_gemini(body)
                else:
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                received.size = len(body)
            except (AssertionError, KeyError, ValueError, TypeError) as exc:  # a malformed request: say so
                server.violations.append(f"{self.path}: {type(exc).__name__}: {exc}")
                return self._send(400, {"error": {"message": f"test server: malformed request: {exc}"}})
            server._record(received)
            count = server._enter()
            try:
                if server.gate_after is not None and count > server.gate_after:
                    server.gate.wait(60)
                if server.delay:
                    time.sleep(server.delay)
                self._answer(received)
            finally:
                server._leave()

        def _answer(self, received: Received):
            try:
                if received.kind == "openai":
                    self._check_openai_key()
                else:
                    self._check_gemini_key()
                fault = server._next_fault(received.prompt)
                if fault == "drop":
                    received.status = 0
                    self.close_connection = True
                    return
                if fault == "slow":
                    time.sleep(server.slow_seconds)
                if fault in ("429", "429-date"):
                    after = server.retry_after if fault == "429" else formatdate(time.time() + 1, usegmt=True)
                    raise _Reply(429, {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
                                 {"Retry-After": after})
                if fault in ("500", "503"):
                    raise _Reply(int(fault), {"error": {"message": "The server had an error"}})
                if fault == "badjson":
                    received.status = 200
                    return self._send(200, b'{"data": [ {"b64_json": ', content_type="application/json")
                model = received.body.get("model") if received.kind == "gemini" else received.fields.get("model")
                if model not in server.models and received.kind == "gemini":
                    raise _Reply(404, _gemini_missing(model, self.path.split("/")[1]))
                if model not in server.models:
                    raise _Reply(404, {"error": {"message": f"The model `{model}` does not exist or you do not have "
                                                            "access to it.", "type": "invalid_request_error",
                                                 "param": None, "code": "model_not_found"}})
                if received.kind == "openai":
                    raise _Reply(200, self._openai_result(received, fault))
                raise _Reply(200, self._gemini_result(received, fault))
            except _Reply as reply:
                received.status = reply.status
                self._send(reply.status, reply.body, reply.headers)

        # -- auth ----------------------------------------------------------------------------------------
        def _check_openai_key(self):
            given = self.headers.get("Authorization")
            if server.key is not None and given != f"Bearer {server.key}":
                shown = given.split(" ", 1)[-1] if given else ""
                masked = f"{shown[:5]}****{shown[-4:]}" if len(shown) > 9 else "none"
                raise _Reply(401, {"error": {"message": f"Incorrect API key provided: {masked}.",
                                             "type": "invalid_request_error", "code": "invalid_api_key"}})

        def _check_gemini_key(self):
            given = self.headers.get("x-goog-api-key")
            if server.key is None or given == server.key:
                return
            if not given:
                raise _Reply(403, {"error": {"code": 403, "status": "PERMISSION_DENIED",
                                             "message": "Method doesn't allow unregistered callers."}})
            raise _Reply(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                         "message": "API key not valid. Please pass a valid API key.",
                                         "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                                      "reason": "API_KEY_INVALID"}]}})

        # -- OpenAI --------------------------------------------------------------------------------------
        def _parse_openai(self, body: bytes) -> Received:
            content_type = self.headers.get("Content-Type", "")
            message = BytesParser(policy=policy.HTTP).parsebytes(
                b"Content-Type: " + content_type.encode() + b"\r\nMIME-Version: 1.0\r\n\r\n" + body)
            received = Received("openai", self.path, self._headers())
            names = set()
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                if part.get_filename() is not None:
                    names.add(name)
                    received.uploads.append((part.get_content_type(), payload))
                    received.images.append(decode(payload))
                else:
                    assert name not in received.fields, f"field {name} sent twice"
                    received.fields[name] = payload.decode("utf-8")
            assert len(names) == 1, f"image parts under several names: {names}"
            received.image_field = names.pop()
            assert received.image_field == ("image" if len(received.images) == 1 else "image[]")
            received.prompt = received.fields.get("prompt")
            return received

        def _openai_result(self, received: Received, fault: Optional[str]) -> dict:
            prompt = received.prompt
            if fault == "refuse" or "REFUSE" in prompt:
                raise _Reply(400, {"error": {"message": "Your request was rejected by the safety system.",
                                             "type": "image_generation_user_error", "code": "moderation_blocked"}})
            if "BADREQ" in prompt:
                raise _Reply(400, {"error": {"message": "Invalid value for 'size'.", "type": "invalid_request_error",
                                             "code": "invalid_value"}})
            if "ECHOKEY" in prompt:
                raise _Reply(400, {"error": {"message": f"bad request from {self.headers.get('Authorization')}"}})
            usage = {"input_tokens": 10 * len(received.images), "output_tokens": 100,
                     "input_tokens_details": {"image_tokens": 10 * len(received.images), "text_tokens": 0}}
            if fault == "noimage" or "NOIMAGE" in prompt:
                return {"created": 0, "data": [], "usage": usage}
            n = int(received.fields.get("n", "1"))
            seed = received.fields.get("seed")
            seed = None if seed is None else int(seed)
            data = []
            for k in range(n):
                edit = expected_edit(_shrunk(received.images, server.thumbnail), prompt, k, seed)
                if received.fields.get("background") == "transparent":  # half transparent, as a test can see
                    edit = np.dstack([edit, np.full(edit.shape[:2], 128, dtype=np.uint8)])
                png = png_bytes(edit)
                data.append({"url": server._store_file(png)} if server.url_mode
                            else {"b64_json": base64.b64encode(png).decode()})
            return {"created": 0, "data": data, "usage": usage}

        # -- Gemini --------------------------------------------------------------------------------------
        def _parse_gemini(self, body: bytes) -> Received:
            request = json.loads(body)
            model = self.path.split("/models/", 1)[1][: -len(":generateContent")]
            received = Received("gemini", self.path, self._headers(), body=dict(request, model=model))
            contents = request["contents"]
            roles = [content.get("role", "user") for content in contents]
            assert roles == ["user", "model"] * (len(contents) // 2) + ["user"], f"turns out of order: {roles}"
            received.turns = len(contents) // 2 + 1
            first, last = contents[0]["parts"], contents[-1]["parts"]
            assert "text" in first[-1] and all("text" not in p for p in first[:-1]), "images first, then the text"
            for part in first[:-1]:
                inline = part.get("inline_data") or part.get("inlineData")
                data = base64.b64decode(inline["data"])
                received.uploads.append((inline.get("mime_type") or inline.get("mimeType"), data))
                received.images.append(decode(data))
            if len(contents) > 1:  # a later turn: it edits the image of the model's last answer
                assert len(last) == 1 and "text" in last[0], "a later turn is text alone"
                answered = [p for p in contents[-2]["parts"] if (p.get("inlineData") or p.get("inline_data"))
                            and not p.get("thought")]
                assert answered and answered[-1].get("thoughtSignature") == f"sig-{len(contents) // 2}", \
                    "the model's answer must come back as it was sent, thought signature included"
                inline = answered[-1].get("inlineData") or answered[-1].get("inline_data")
                received.images = [decode(base64.b64decode(inline["data"]))]
            received.prompt = last[-1]["text"]
            return received

        def _gemini_result(self, received: Received, fault: Optional[str]) -> dict:
            answer = self._gemini_answer(received, fault)
            return _snake(answer) if server.snake_case else answer

        def _gemini_answer(self, received: Received, fault: Optional[str]) -> dict:
            prompt = received.prompt
            config = received.body.get("generationConfig", {})
            assert "IMAGE" in config.get("responseModalities", []), config
            usage = {"promptTokenCount": 300, "candidatesTokenCount": 1290, "totalTokenCount": 1590,
                     "promptTokensDetails": [{"modality": "IMAGE", "tokenCount": 258 * len(received.images)},
                                             {"modality": "TEXT", "tokenCount": 42}]}
            if "BLOCK" in prompt:
                return {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": usage}
            if fault == "refuse" or "REFUSE" in prompt:
                return {"candidates": [{"content": {"role": "model", "parts": [
                    {"text": "I can't make that edit."}]}, "finishReason": "IMAGE_SAFETY"}], "usageMetadata": usage}
            if fault == "noimage" or "NOIMAGE" in prompt:
                return {"candidates": [{"content": {"role": "model", "parts": [
                    {"text": "Here is a description of the edited picture instead."}]}, "finishReason": "STOP"}],
                    "usageMetadata": usage}
            if "BADREQ" in prompt:
                raise _Reply(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                             "message": "Request contains an invalid argument."}})
            seed = config.get("seed")
            png = png_bytes(expected_edit(_shrunk(received.images, server.thumbnail), prompt, 0, seed))
            parts = [{"text": "Here is the edited image."}, {"thought": True, "inlineData": {
                "mimeType": "image/png", "data": base64.b64encode(png_bytes(received.images[0][:8, :8])).decode()}},
                {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode()},
                 "thoughtSignature": f"sig-{received.turns}"}]
            return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
                    "usageMetadata": usage}

    return Handler


def _gemini_missing(model: str, version: str) -> dict:
    return {"error": {"code": 404, "status": "NOT_FOUND", "message": f"models/{model} is not found for API version "
                      f"{version}, or is not supported for generateContent."}}


def _snake(value):
    """A Gemini answer in snake_case, as proxies and SDK dumps write it."""
    if isinstance(value, dict):
        return {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k): _snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake(v) for v in value]
    return value


def _shrunk(images: list, thumbnail: Optional[int]) -> list:
    """The images the server edits: as received, or (the first) at most ``thumbnail`` pixels wide and high."""
    if thumbnail is None:
        return images
    return [images[0][::max(1, images[0].shape[0] // thumbnail), ::max(1, images[0].shape[1] // thumbnail)]]


@pytest.fixture
def edit_server():
    """A running ``EditServer`` that requires the key ``test-key``; stopped after the test."""
    server = EditServer().start()
    yield server
    server.stop()
