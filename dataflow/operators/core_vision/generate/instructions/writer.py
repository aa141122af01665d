"""The writer protocol: a batch of asks (an image and the edit types wanted, or a user's instruction to rewrite) in,
one set of drafts each out; and ``TemplateWriter``, the offline writer built on the classic grammar.

A writer is built from plain keyword arguments and loads any model lazily, so that engines can build it inside a
worker (as servings are). ``write`` keeps the order of its asks; a problem with one ask (an answer that cannot be
read) is that ask's ``Drafts.error``, never an exception; an exception means the writer itself failed (a model that
cannot load, a refused API key) and stops the run.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from dataflow.core.errors import InputError
from dataflow.operators.core_vision.generate.instructions.prompts import (
    AnswerError,
    parse_instructions,
    parse_rewrite,
    prompt_version,
)
from dataflow.operators.core_vision.generate.instructions.taxonomy import EditType


@dataclass(frozen=True)
class InstructionAsk:
    """One image's request.

    Args:
        key: the row's identity (seeds choices from it, never from batch position).
        image: the image (RGB).
        types: the edit types to write one instruction each for (empty when rewriting).
        instruction: the user's instruction to rewrite (None when writing new ones).
    """

    key: str
    image: Any
    types: tuple = ()
    instruction: Optional[str] = None


@dataclass
class Drafts:
    """A writer's answer to one ask: ``{"type", "instruction"}`` or ``{"type", "declined"}`` items, one per type
    asked (a rewrite: one ``{"instruction"}``), or the reason there are none."""

    items: list = field(default_factory=list)
    error: Optional[str] = None


class InstructionWriter(ABC):
    """Base class of instruction writers.

    ``backend`` names it in provenance; ``batch_size`` is how many asks one ``write`` call takes; ``concurrency`` >
    1 lets an engine run that many ``write`` calls at once from threads (remote APIs), in which case ``write`` must
    be thread-safe. ``can_rewrite`` says whether it rewrites user instructions.
    """

    backend: str = ""
    model: Optional[str] = None
    batch_size: int = 1
    concurrency: int = 1
    can_rewrite: bool = True

    def fingerprint(self) -> dict:
        """What determines the answers (model, prompt, parameters; never a key)."""
        return {"writer": self.backend, "model": self.model, "prompt": prompt_version()}

    def provenance(self) -> dict:
        """What each written row records about how its instruction was made."""
        return {"backend": self.backend, "model": self.model, "prompt_version": prompt_version()}

    def supports(self, edit_type: EditType) -> bool:
        """Whether this writer can write instructions of ``edit_type``."""
        return True

    @abstractmethod
    def write(self, asks: Sequence[InstructionAsk]) -> list:
        """One ``Drafts`` per ask, in order."""

    def check(self) -> Optional[str]:
        """Raise ``ModelLoadError``/``ServiceError`` if the writer cannot be used; return a note, or None."""
        return None

    def usage(self) -> dict:
        return {}

    def use_device(self, device: str) -> None:
        """Run on ``device``; the default ignores it."""

    def close(self) -> None:
        """Release models and connections."""


class ModelWriter(InstructionWriter):
    """A writer whose model answers in text: ``answer`` gets the texts, this class reads them as drafts."""

    @abstractmethod
    def answer(self, asks: Sequence[InstructionAsk]) -> list:
        """Per ask, the model's answer text, or an ``AnswerError`` for an ask that got none (a failed request)."""

    def write(self, asks: Sequence[InstructionAsk]) -> list:
        return [self.read(ask, answer) for ask, answer in zip(asks, self.answer(asks))]

    @staticmethod
    def read(ask: InstructionAsk, answer: Any) -> Drafts:
        """The drafts in ``answer``, or the reason it holds none."""
        if isinstance(answer, AnswerError):
            return Drafts(error=str(answer))
        try:
            if ask.instruction is not None:
                return Drafts([{"instruction": parse_rewrite(answer)}])
            return Drafts(parse_instructions(answer, ask.types))
        except AnswerError as exc:
            return Drafts(error=str(exc))


class TemplateWriter(InstructionWriter):
    """Offline instructions from the taxonomy's ``phrases``: global edits the classic backend carries out exactly
    (``dataflow-edit run --backend classic``). Each image's phrase of a type is picked by a hash of the row's
    identity and the type, so a rerun writes the same. It sees no image, so it never declines, and cannot rewrite.
    """

    backend = "templates"
    batch_size = 64
    can_rewrite = False

    def fingerprint(self) -> dict:
        return {"writer": self.backend}

    def provenance(self) -> dict:
        return {"backend": self.backend}

    def supports(self, edit_type: EditType) -> bool:
        return bool(edit_type.phrases)

    def write(self, asks: Sequence[InstructionAsk]) -> list:
        drafts = []
        for ask in asks:
            if ask.instruction is not None:
                raise InputError("the templates backend cannot rewrite instructions; use --backend api or local")
            drafts.append(Drafts([{"type": t.name, "instruction": self.pick(ask.key, t)} for t in ask.types]))
        return drafts

    @staticmethod
    def pick(key: str, edit_type: EditType) -> str:
        if not edit_type.phrases:
            raise InputError(f"the templates backend has no phrases for edit type {edit_type.name!r}")
        digest = hashlib.sha256(f"{key}\0{edit_type.name}".encode("utf-8")).digest()
        return edit_type.phrases[int.from_bytes(digest[:8], "big") % len(edit_type.phrases)]
