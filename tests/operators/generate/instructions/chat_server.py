"""A local OpenAI-compatible ``/v1/chat/completions`` VLM on 127.0.0.1 that writes edit instructions, for the
instruction writer tests.

It looks at the image it receives (a PNG data URL, decoded here): its colour decides how it answers, and every
instruction it writes names that colour and the image's size, so a test can tell that each written row is grounded
in its own image. ``red``: a clean JSON list. ``green``: a fenced list among prose that declines ``text``.
``blue``: no JSON at all. ``yellow``: a 500 first, then a clean list (a retry). ``magenta``: two types with nearly the
same instruction. ``cyan``: an apology as one type's instruction. A rewrite prompt is answered with a JSON object.
Requests whose shape is wrong are recorded in ``violations``.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler
from typing import Optional

import numpy as np
from PIL import Image

from tests.loopback import LoopbackServer

MODEL = "vlm-model"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30),
           "magenta": (220, 30, 220), "cyan": (30, 220, 220)}
WORDING = {
    "add": "Add a small {c} kite to the upper left of the {s} picture.",
    "remove": "Remove the {c} patch in the middle of the {s} picture.",
    "replace": "Replace the {c} square of the {s} picture with a wooden table.",
    "color_material": "Turn the {c} surface of the {s} picture into polished marble.",
    "background": "Put a beach behind the {c} block of the {s} picture.",
    "lighting": "Light the {c} {s} scene as at sunset.",
    "text": "Write the word HELLO across the {c} {s} picture.",
    "style": "Render the {c} {s} picture as a watercolour painting.",
}


def colour_of(pixels: np.ndarray) -> str:
    mean = pixels.reshape(-1, 3).mean(axis=0)
    return min(COLOURS, key=lambda name: float(np.abs(mean - np.array(COLOURS[name])).sum()))


def solid(colour: str, width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), COLOURS[colour])


class InstructionServer(LoopbackServer):
    """The server; ``url`` is its root, ``key`` the key it requires (None: none)."""

    def __init__(self, key: Optional[str] = "vlm-key"):
        self.key = key
        self.requests: list = []  # {"colour", "size", "types", "instruction", "body"} of each chat request
        self.violations: list = []
        self._failed: set = set()
        self._lock = threading.Lock()
        super().__init__(_handler(self))

    def reply(self, headers: dict, path: str, raw: bytes) -> tuple:
        if self.key is not None and headers.get("authorization") != f"Bearer {self.key}":
            return 401, {"error": {"message": f"Incorrect API key provided: {headers.get('authorization')}"}}
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}"}}
        body = json.loads(raw)
        seen = self._read(body, raw)
        with self._lock:
            self.requests.append(seen)
            first_failure = seen["colour"] == "yellow" and seen["size"] not in self._failed
            self._failed.add(seen["size"])
        if first_failure:
            return 500, {"error": {"message": "the model crashed"}}
        content = self.answer(seen)
        return 200, {"id": "x", "object": "chat.completion", "model": MODEL,
                     "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}

    @staticmethod
    def answer(seen: dict) -> str:
        colour, size = seen["colour"], "x".join(map(str, seen["size"]))
        if seen["instruction"] is not None:
            return json.dumps({"instruction": f"Make the {colour} {size} picture show this: {seen['instruction']}"})
        if colour == "blue":
            return "This picture is entirely blue; I see nothing to edit."
        items = [{"type": t, "instruction": WORDING[t].format(c=colour, s=size)} for t in seen["types"]]
        if colour == "green":
            items = [dict(i, instruction="NONE", reason="there is no text") if i["type"] == "text" else i
                     for i in items]
            return "Here are my instructions:\n```json\n" + json.dumps(items) + "\n```\nEnjoy."
        if colour == "magenta" and len(items) > 1:
            items[1]["instruction"] = items[0]["instruction"].rstrip(".") + "!"
        if colour == "cyan":
            items[-1]["instruction"] = "I'm sorry, I cannot help with that."
        return json.dumps(items)

    def _read(self, body: dict, raw: bytes) -> dict:
        problems = []
        if self.key and self.key.encode() in raw:
            problems.append("the key is in the body")
        if body.get("model") != MODEL or not body.get("max_completion_tokens") or "max_tokens" in body:
            problems.append(f"bad parameters: model {body.get('model')!r}, max_completion_tokens "
                            f"{body.get('max_completion_tokens')!r}, max_tokens {body.get('max_tokens')!r}")
        messages = body.get("messages") or [{}]
        parts = messages[0].get("content") if len(messages) == 1 else None
        kinds = [p.get("type") for p in parts] if isinstance(parts, list) else None
        if kinds != ["image_url", "text"]:
            problems.append(f"content parts are {kinds}, not the image then the text")
            parts = [{"image_url": {"url": ""}}, {"text": ""}]
        url = parts[0]["image_url"]["url"]
        pixels = np.zeros((1, 1, 3))
        if url.startswith("data:image/png;base64,"):
            with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
                pixels = np.asarray(image.convert("RGB"))
        else:
            problems.append(f"the image is not a PNG data URL: {url[:40]!r}")
        text = parts[1]["text"]
        quoted = re.search(r'asked for this edit:\s*"(.*?)"', text, re.S)
        with self._lock:
            self.violations += problems
        return {"colour": colour_of(pixels), "size": (pixels.shape[1], pixels.shape[0]),
                "types": re.findall(r"^- ([a-z_]+): ", text, re.M), "instruction": quoted.group(1) if quoted else None,
                "body": body}


def _handler(server: InstructionServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, body = server.reply({k.lower(): v for k, v in self.headers.items()}, self.path, raw)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
