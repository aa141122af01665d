"""The rules a written instruction must pass, and near-duplicates within one image.

An answer that is empty, too long, or reads as a reply rather than an instruction (an apology, a question, a
description of the picture, leftover JSON) fails its image with a message naming the type and the rule; a rerun
asks again. Two instructions of one image that say nearly the same (equal once lower-cased with punctuation and
articles dropped, or a ``difflib`` similarity ratio at or above ``similarity``) keep the first; the second is
recorded as a duplicate, not written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Optional, Sequence

MAX_CHARS = 300
MAX_WORDS = 60
SIMILARITY = 0.9
REPLY_OPENINGS = (
    "i ", "i'm", "i am", "i can", "i cannot", "i can't", "i'd", "im ", "sorry", "as an ai", "as a language model",
    "here is", "here are", "here's", "sure", "certainly", "of course", "unfortunately", "this image", "the image shows",
    "the image is", "the image depicts", "the picture shows", "this picture", "this photo", "in this image",
    "there is no", "there are no",
)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


@dataclass(frozen=True)
class QualityRules:
    """Limits on one instruction.

    Args:
        max_chars: the longest instruction, in characters.
        max_words: the longest instruction, in words.
        similarity: ``difflib`` ratio (0-1) at or above which two instructions of one image are near-duplicates.
    """

    max_chars: int = MAX_CHARS
    max_words: int = MAX_WORDS
    similarity: float = SIMILARITY

    def problem(self, text: object) -> Optional[str]:
        """Why ``text`` is not a usable instruction, or None."""
        if not isinstance(text, str) or not text.strip():
            return "the instruction is empty"
        text = " ".join(text.split())
        if len(text) > self.max_chars:
            return f"the instruction is {len(text)} characters long (at most {self.max_chars}): {text[:80]!r}..."
        words = len(text.split())
        if words > self.max_words:
            return f"the instruction is {words} words long (at most {self.max_words}): {text[:80]!r}..."
        if not re.search(r"[A-Za-z]", text):
            return f"the instruction holds no words: {text!r}"
        lower = text.lower().replace("\u2019", "'")
        if lower.startswith(REPLY_OPENINGS):
            return f"the answer reads as a reply, not an edit instruction: {text[:120]!r}"
        if text.rstrip().endswith("?"):
            return f"the answer is a question, not an edit instruction: {text[:120]!r}"
        if re.search(r"[{}]|\"(?:type|instruction)\"\s*:", text):
            return f"the instruction holds leftover JSON: {text[:120]!r}"
        return None

    def duplicate_of(self, text: str, earlier: Sequence[str]) -> Optional[int]:
        """The position in ``earlier`` of an instruction that ``text`` nearly repeats, or None."""
        mine = normalised(text)
        for position, other in enumerate(earlier):
            theirs = normalised(other)
            if mine == theirs or SequenceMatcher(None, mine, theirs).ratio() >= self.similarity:
                return position
        return None


def normalised(text: str) -> str:
    """Lower case, without punctuation or articles, single spaces: what two instructions are compared on."""
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def clean(text: str) -> str:
    """One line, surrounding quotes and whitespace removed."""
    return " ".join(text.split()).strip().strip('"').strip("'").strip()
