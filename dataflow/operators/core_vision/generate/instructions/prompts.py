"""What a model is asked for instructions (or a rewrite), and how its answer is read: shared by the API and local
writers.

Models answer in many shapes, so the reader takes a JSON list (fenced or among prose), JSON lines, a single object,
or an object holding a list (``{"instructions": [...]}``), with the type under ``type`` or ``edit_type`` and the text
under ``instruction`` (or ``text``, ``prompt``). An instruction of ``NONE`` (or ``N/A``, null, ``"declined": true``)
declines its type: the image does not fit it, and the decline is recorded instead of a forced instruction.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Iterator, Optional, Sequence

from dataflow.operators.core_vision.generate.instructions.taxonomy import EditType, normalise_name

GENERATE_PROMPT = """You write instructions for an image-editing model. Look at the image and write one edit \
instruction for each of these edit types:

{types}

Rules:
- Ground every instruction in this image: name the objects, colours and places you can see in it.
- Each instruction is one imperative English sentence of at most 30 words, such as "Replace the red car on the \
left with a blue bicycle."
- If an edit type does not fit this image (for example, there is no text to change), decline it: write NONE as \
its instruction and say why in "reason". Never invent a thing the image does not show for a type that needs one.

Answer with a JSON list and nothing else, one object per edit type, in the order given:
[{{"type": "<edit type>", "instruction": "<the instruction, or NONE>", "reason": "<only when declining>"}}]"""

REWRITE_PROMPT = """You rewrite instructions for an image-editing model. The image is the picture to edit, and a \
user asked for this edit:

"{instruction}"

Rewrite it as one clear, specific, imperative English sentence of at most 30 words, grounded in the image: name \
the objects and places it refers to as they appear in the image. Keep its intent; add no edit it did not ask for.

Answer with one JSON object and nothing else:
{{"instruction": "<the rewritten instruction>"}}"""

TYPE_KEYS = ("type", "edit_type", "category", "name")
TEXT_KEYS = ("instruction", "text", "prompt", "edit", "rewritten_instruction", "rewrite")
REASON_KEYS = ("reason", "why", "explanation")
DECLINE_WORDS = {"none", "n_a", "na", "null", "nil", "no", "declined", "decline", "skip", "not_applicable"}
_FENCED = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.S)
_JSON_START = re.compile(r"[\[{]")
MISSING = object()


def generate_prompt(types: Sequence[EditType]) -> str:
    """The text that goes with the image when instructions of ``types`` are asked for."""
    return GENERATE_PROMPT.format(types="\n".join(f"- {t.name}: {t.description}" for t in types))


def rewrite_prompt(instruction: str) -> str:
    """The text that goes with the image when ``instruction`` is to be rewritten."""
    return REWRITE_PROMPT.format(instruction=instruction)


def prompt_version() -> str:
    """A short hash of both prompts, for fingerprints and provenance: a changed prompt redoes earlier answers."""
    return hashlib.sha256((GENERATE_PROMPT + "\0" + REWRITE_PROMPT).encode()).hexdigest()[:12]


class AnswerError(ValueError):
    """The answer cannot be read as instructions."""


def parse_instructions(text: Any, types: Sequence[EditType]) -> list:
    """One draft per type, in ``types`` order: ``{"type", "instruction"}`` or ``{"type", "declined"}`` (the reason).

    Types the answer does not cover raise ``AnswerError`` naming them; items of types not asked for are ignored;
    a type answered twice keeps its first item.
    """
    if not isinstance(text, str) or not text.strip():
        raise AnswerError("the answer is empty")
    wanted = {t.name: t for t in types}
    found: dict = {}
    for item in _items(text):
        name = normalise_name(_first(item, TYPE_KEYS) or "")
        if name in wanted and name not in found:
            found[name] = _draft(name, item)
    if not found:
        raise AnswerError(f"the answer holds no JSON list of {{type, instruction}} objects for the types asked "
                          f"({', '.join(wanted)}): {_start(text)!r}")
    missing = [name for name in wanted if name not in found]
    if missing:
        raise AnswerError(f"the answer has no instruction for type {', '.join(map(repr, missing))}: {_start(text)!r}")
    return [found[name] for name in wanted]


def parse_rewrite(text: Any) -> str:
    """The rewritten instruction: a JSON object's ``instruction`` (or a like key), else the answer's text itself
    (rewriter models such as Qwen-Image's prompt enhancer answer in plain text)."""
    if not isinstance(text, str) or not text.strip():
        raise AnswerError("the answer is empty")
    for item in _items(text):
        value = _first(item, TEXT_KEYS)
        if isinstance(value, str):
            return value.strip()
    plain = _FENCED.sub(lambda m: m.group(1), text).strip().strip('"').strip()
    return " ".join(plain.split())


def _draft(name: str, item: dict) -> dict:
    value = _first(item, TEXT_KEYS, MISSING)
    if value is MISSING and item.get("declined") is not True and item.get("decline") is not True:
        raise AnswerError(f"the answer's item for type {name!r} has no instruction: {_start(json.dumps(item))!r}")
    declined = value in (None, MISSING) or item.get("declined") is True or item.get("decline") is True
    if isinstance(value, str) and normalise_name(value) in DECLINE_WORDS:
        declined = True
    if declined:
        reason = _first(item, REASON_KEYS)
        return {"type": name, "declined": reason.strip() if isinstance(reason, str) and reason.strip()
                else "the model declined this type for the image"}
    return {"type": name, "instruction": value if isinstance(value, str) else json.dumps(value)}


def _items(text: str) -> Iterator[dict]:
    """Every JSON object the answer holds, in order: in fenced blocks first, then in the text; a list's objects,
    and those of an object's list values (``{"instructions": [...]}``), one by one."""
    decoder = json.JSONDecoder()
    sources = [block for block in _FENCED.findall(text)] + [_FENCED.sub(" ", text)]
    for source in sources:
        position = 0
        while True:
            match = _JSON_START.search(source, position)
            if not match:
                break
            try:
                value, end = decoder.raw_decode(source, match.start())
            except ValueError:
                position = match.start() + 1
                continue
            yield from _objects(value)
            position = end


def _objects(value: Any) -> Iterator[dict]:
    if isinstance(value, list):
        for item in value:
            yield from _objects(item)
    elif isinstance(value, dict):
        if _first(value, TYPE_KEYS) is not None or _first(value, TEXT_KEYS) is not None:
            yield value
        else:
            for inner in value.values():
                if isinstance(inner, list):
                    yield from _objects(inner)


def _first(item: dict, keys: Sequence[str], default: Any = None) -> Optional[Any]:
    """The value of the first of ``keys`` in ``item`` (keys compared loosely), or ``default``."""
    normal = {normalise_name(k): v for k, v in item.items()}
    for key in keys:
        if key in normal:
            return normal[key]
    return default


def _start(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")
