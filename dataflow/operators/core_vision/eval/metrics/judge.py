"""What a VLM judge of edits is asked, and how its answer is read: shared by ``APIJudge`` and ``LocalJudge``.

The scores follow VIEScore and GEdit-Bench: ``sc`` (semantic consistency: was the instruction carried out, without
over-editing) and ``pq`` (perceptual quality: natural, free of artifacts), each 0-10, and ``overall`` =
sqrt(sc * pq), so an edit scores high only when it is both right and clean. The judge sees the source first and
the edit second. Models answer in many shapes, so the parser takes JSON (fenced or among prose, scores as numbers,
strings, "7/10" or VIEScore's lists of sub-scores, whose minimum counts) and plain text ("SC: 7, PQ: 8",
"Semantic consistency 7/10 ... quality 8/10"); an answer without both scores is that item's error.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Optional, Sequence

from dataflow.http import Secret, redact
from dataflow.operators.core_vision.eval.metric import ScoreResult

NAME = "judge"

PROMPT = """You judge instruction-based image edits. The first image is the original. The second image is the \
result of editing it with this instruction:

"{instruction}"

Rate the edit on two scales from 0 to 10.
- sc (semantic consistency): how well the second image carries out the instruction without over-editing. 0: the \
instruction was not followed at all, or the image became a different picture. 10: the instruction was followed \
exactly and everything it did not ask to change is kept. An edit that left the image unchanged scores 0.
- pq (perceptual quality): how natural and free of artifacts the second image looks (distortions, blur, broken \
shapes or text, unnatural lighting, visible seams). 0: unusable. 10: flawless.

Answer with one JSON object and nothing else:
{{"sc": <integer 0-10>, "pq": <integer 0-10>, "reason": "<one short sentence>"}}"""

# JSON keys (lower case, spaces and hyphens as "_") and text labels of each score, most specific first
KEYS = {
    "sc": ("sc", "semantic_consistency", "sc_score", "semantics", "semantic"),
    "pq": ("pq", "perceptual_quality", "pq_score", "quality"),
}
LABELS = {
    "sc": (r"semantic[\s_-]*consistency", r"sc"),
    "pq": (r"perceptual[\s_-]*quality", r"pq", r"quality"),
}
DESCRIPTIONS = {"sc": "sc (semantic consistency)", "pq": "pq (perceptual quality)"}
REASON_KEYS = ("reason", "reasoning", "explanation", "rationale")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_FENCED = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.S)


def judge_prompt(instruction: str) -> str:
    """The text that goes with the two images."""
    return PROMPT.format(instruction=instruction)


def prompt_version() -> str:
    """A short hash of the prompt, for fingerprints: a changed prompt invalidates earlier judgements."""
    return hashlib.sha256(PROMPT.encode()).hexdigest()[:12]


class JudgeAnswerError(ValueError):
    """The answer holds no usable scores."""


def parse_judgement(text: Any) -> dict:
    """``{"sc", "pq", "overall", "reason"}`` from a judge's answer; ``JudgeAnswerError`` naming what is missing,
    with the start of the answer. Scores are clamped to 0-10."""
    if not isinstance(text, str) or not text.strip():
        raise JudgeAnswerError("the judge's answer is empty")
    scores, reason = _from_json(text)
    for score, labels in LABELS.items():
        if scores.get(score) is None:
            scores[score] = _from_labels(text, labels)
    missing = [DESCRIPTIONS[s] for s in ("sc", "pq") if scores.get(s) is None]
    if missing:
        raise JudgeAnswerError(f"the judge's answer has no {' or '.join(missing)} score: {_start(text)!r}")
    sc, pq = (min(10.0, max(0.0, scores[s])) for s in ("sc", "pq"))
    if reason is None:
        reason = _start(_FENCED.sub(lambda m: m.group(1), text), 500)
    return {"sc": sc, "pq": pq, "overall": math.sqrt(sc * pq), "reason": reason}


def judgement(text: Any, secrets: Sequence[Secret] = ()) -> ScoreResult:
    """The item's result: its values, or the parser's error (``secrets`` redacted from what it quotes)."""
    try:
        return ScoreResult(parse_judgement(text))
    except JudgeAnswerError as exc:
        return ScoreResult(error=redact(str(exc), secrets))


# -- JSON ------------------------------------------------------------------------------------------------------
def _from_json(text: str) -> tuple[dict, Optional[str]]:
    """Scores and reason of the first JSON object in ``text`` (fenced blocks first) that holds a score."""
    for candidate in _json_objects(text):
        scores = {score: _score(_find(candidate, keys)) for score, keys in KEYS.items()}
        if any(value is not None for value in scores.values()):
            reason = _find(candidate, REASON_KEYS)
            return scores, reason.strip() if isinstance(reason, str) else None
    return {}, None


def _json_objects(text: str):
    decoder = json.JSONDecoder()
    for block in _FENCED.findall(text):
        try:
            value = json.loads(block)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def _find(obj: dict, keys: Sequence[str]) -> Any:
    """The value of the first of ``keys`` in ``obj`` or in the objects nested in it (keys compared loosely)."""
    normal = {re.sub(r"[\s-]+", "_", str(k).strip().lower()): v for k, v in obj.items()}
    for key in keys:
        if key in normal:
            return normal[key]
    for value in obj.values():
        if isinstance(value, dict):
            found = _find(value, keys)
            if found is not None:
                return found
    return None


def _score(value: Any) -> Optional[float]:
    """A number from a JSON value: a number, a string holding one ("7", "7/10", "8.5"), or a list of them (its
    minimum, as VIEScore combines sub-scores); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        match = _NUMBER.search(value)
        number = float(match.group(0)) if match else math.nan
    elif isinstance(value, list) and value:
        parts = [_score(v) for v in value]
        return None if any(p is None for p in parts) else min(parts)
    else:
        return None
    return None if math.isnan(number) else number


# -- plain text ------------------------------------------------------------------------------------------------
def _from_labels(text: str, labels: Sequence[str]) -> Optional[float]:
    """The number after the first label found ("SC: 7", "quality 8/10", "sc=7.5"), most specific label first.
    Between label and number may stand up to 40 characters but no digit, line break or , ; . (so that a label
    without a number does not take the next label's)."""
    for label in labels:
        match = re.search(rf"\b(?:{label})\b[^0-9\n,;.]{{0,40}}?(-?\d+(?:\.\d+)?)", text, re.I)
        if match:
            return float(match.group(1))
    return None


def _start(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")
