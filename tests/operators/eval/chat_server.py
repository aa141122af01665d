"""A local OpenAI-compatible ``/v1/chat/completions`` judge on 127.0.0.1, for ``APIJudge`` tests.

Its answer depends on a marker word in the instruction: ``CLEAN`` (plain JSON), ``FENCED`` (a fenced JSON block
among prose), ``MESSY`` ("SC: 7/10 ... PQ: 8/10"), ``GARBAGE`` (no scores), ``ECHOKEY`` (no scores, quoting the
key), ``FLAKY`` (a 500, then clean JSON), ``DOWN`` (always 500), ``SCORE<n>`` (sc n, pq 10 - n), ``REFUSE`` (no
content, a ``message.refusal``), ``LONGTHINK`` (no content: the token limit was spent reasoning). It checks every
request's shape and records what broke it in ``violations``, and it decodes the two images it received.

With ``reasoning`` set it behaves as OpenAI's reasoning models do: a request carrying ``max_tokens``, or a
``temperature`` other than 1, is refused with a 400 naming the parameter.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Optional

import numpy as np
from PIL import Image

from tests.loopback import LoopbackServer

MODEL = "judge-model"
USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
REFUSAL = "I'm sorry, but I can't help with rating these images, as they appear to show a real person's face."


def answer_for(instruction: str) -> str:
    if "FENCED" in instruction:
        return 'Here is my verdict.\n```json\n{"sc": "6", "pq": 9.5, "reason": "close enough"}\n```\nThanks.'
    if "MESSY" in instruction:
        return "SC: 7/10 - the sky is red as asked. PQ: 8/10, no visible artifacts."
    if "GARBAGE" in instruction:
        return "I am unable to evaluate these images."
    match = re.search(r"SCORE(\d+)", instruction)
    if match:
        n = int(match.group(1))
        return json.dumps({"sc": n, "pq": 10 - n, "reason": f"item {n}"})
    return json.dumps({"sc": 7, "pq": 8, "reason": "the edit follows the instruction"})


class ChatServer(LoopbackServer):
    """The server; ``url`` is its root (``http://127.0.0.1:PORT``), ``key`` the key it requires (None: none)."""

    def __init__(self, key: Optional[str] = "judge-key", delay: float = 0.0, reasoning: bool = False):
        self.key = key
        self.delay = delay
        self.reasoning = reasoning
        self.missing_models: set = set()  # answered as a server answers for a model it does not serve
        self.requests: list[dict] = []  # {"headers", "path", "body", "images"} of each chat request
        self.violations: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self._failed: set[str] = set()
        self._lock = threading.Lock()
        super().__init__(_handler(self))

    def reply(self, headers: dict, path: str, raw: bytes) -> tuple[int, dict]:
        """(status, JSON body) for one request."""
        if self.key is not None and headers.get("authorization") != f"Bearer {self.key}":
            return 401, {"error": {"message": f"Incorrect API key provided: {headers.get('authorization')}",
                                   "code": "invalid_api_key"}}
        if path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": MODEL}]}
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}"}}
        body = json.loads(raw)
        if body.get("model") in self.missing_models:
            return 404, {"error": {"message": f"The model `{body['model']}` does not exist or you do not have access "
                                              "to it.", "type": "invalid_request_error", "code": "model_not_found"}}
        if self.reasoning and "max_tokens" in body:
            return 400, {"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                                              "Use 'max_completion_tokens' instead.", "type": "invalid_request_error",
                                   "param": "max_tokens", "code": "unsupported_parameter"}}
        if self.reasoning and body.get("temperature", 1) != 1:
            return 400, {"error": {"message": f"Unsupported value: 'temperature' does not support "
                                              f"{body['temperature']} with this model. Only the default (1) value is "
                                              "supported.", "type": "invalid_request_error", "param": "temperature",
                                   "code": "unsupported_value"}}
        instruction, images = self._check(headers, path, raw, body)
        with self._lock:
            self.requests.append({"headers": headers, "path": path, "body": body, "images": images})
            first_failure = "FLAKY" in instruction and instruction not in self._failed
            self._failed.add(instruction)
        if first_failure or "DOWN" in instruction:
            return 500, {"error": {"message": "the model crashed"}}
        content, refusal, finish = answer_for(instruction), None, "stop"
        if "ECHOKEY" in instruction:
            content = f"no scores, but your key is {self.key}"
        if "REFUSE" in instruction:
            content, refusal = None, REFUSAL
        if "LONGTHINK" in instruction:
            content, finish = "", "length"
        return 200, {"id": "x", "object": "chat.completion", "model": body.get("model"), "usage": USAGE,
                     "choices": [{"index": 0, "finish_reason": finish,
                                  "message": {"role": "assistant", "content": content, "refusal": refusal}}]}

    def _check(self, headers: dict, path: str, raw: bytes, body: dict) -> tuple[str, list]:
        """The instruction and the decoded images; what breaks the expected shape goes to ``violations``."""
        problems = []
        if self.key and (self.key.encode() in raw or self.key in path):
            problems.append("the key is in the body or the URL")
        limits = [k for k in ("max_completion_tokens", "max_tokens") if isinstance(body.get(k), int)]
        if body.get("model") != MODEL or len(limits) != 1:
            shown = {k: body.get(k) for k in ("model", "max_completion_tokens", "max_tokens")}
            problems.append(f"bad parameters: {shown}")
        messages = body.get("messages") or [{}]
        parts = messages[0].get("content") if len(messages) == 1 and messages[0].get("role") == "user" else None
        kinds = [p.get("type") for p in parts] if isinstance(parts, list) else None
        if kinds != ["image_url", "image_url", "text"]:
            problems.append(f"content parts are {kinds}, not two images then the text")
            parts = []
        images = []
        for part in parts[:2]:
            url = part["image_url"]["url"]
            if not url.startswith("data:image/png;base64,"):
                problems.append(f"an image is not a PNG data URL: {url[:40]}")
                continue
            with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
                images.append(np.asarray(image.convert("RGB")))
        text = parts[2]["text"] if len(parts) == 3 else ""
        match = re.search(r'instruction:\s*"(.*?)"', text, re.S)
        if not match:
            problems.append("the prompt quotes no instruction")
        with self._lock:
            self.violations += problems
        return (match.group(1) if match else ""), images


def _handler(server: ChatServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _serve(self, raw: bytes) -> None:
            with server._lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                time.sleep(server.delay)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, body = server.reply(headers, self.path, raw)
            finally:
                with server._lock:
                    server.in_flight -= 1
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._serve(b"")

        def do_POST(self):
            self._serve(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    return Handler
