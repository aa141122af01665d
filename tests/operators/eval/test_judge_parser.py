"""Reading a judge's answer: JSON in its many wrappings, plain text, clamping, and precise errors."""

from __future__ import annotations

import math

import pytest

from dataflow.http import Secret
from dataflow.operators.core_vision.eval.metrics.judge import (
    JudgeAnswerError,
    judge_prompt,
    judgement,
    parse_judgement,
    prompt_version,
)


@pytest.mark.parametrize("answer, sc, pq", [
    ('{"sc": 7, "pq": 8, "reason": "good"}', 7, 8),
    ('```json\n{"sc": 6, "pq": 9}\n```', 6, 9),
    ('Sure! Here it is:\n```\n{"SC": "6", "PQ": "9/10"}\n```\nHope that helps.', 6, 9),
    ('My judgement: {"semantic consistency": 5.5, "perceptual_quality": 7.25, "reason": "ok"} -- done', 5.5, 7.25),
    ('{"scores": {"sc": 4, "pq": 3}}', 4, 3),
    ('{"sc": [8, 6], "pq": [9, 7]}', 6, 7),  # VIEScore's sub-scores: the minimum counts
    ("SC: 7, PQ: 8", 7, 8),
    ("SC: 7/10 - follows the instruction. PQ: 8/10.", 7, 8),
    ("Semantic consistency 7/10: the sky is red. Overall quality 8/10, no artifacts.", 7, 8),
    ("semantic consistency = 3\nperceptual quality = 9", 3, 9),
    ("{'sc': 2, 'pq': 5}", 2, 5),  # a Python dict, not JSON: read as text
    ('{"sc": 12, "pq": -3}', 10, 0),  # clamped
    ('{"sc": 9, "reason": "x"} and PQ: 4', 9, 4),  # a score missing from the JSON is looked for in the text
])
def test_parses(answer, sc, pq):
    values = parse_judgement(answer)
    assert (values["sc"], values["pq"]) == (sc, pq)
    assert values["overall"] == pytest.approx(math.sqrt(sc * pq))
    assert isinstance(values["reason"], str) and values["reason"]


def test_reason_comes_from_the_json_or_else_the_text():
    assert parse_judgement('{"sc": 1, "pq": 2, "reasoning": " too dark "}')["reason"] == "too dark"
    assert parse_judgement("SC: 7, PQ: 8 because it looks fine")["reason"] == "SC: 7, PQ: 8 because it looks fine"


@pytest.mark.parametrize("answer, missing", [
    ("I cannot judge these images.", "no sc (semantic consistency) or pq (perceptual quality) score"),
    ('{"sc": 7, "reason": "no quality given"}', "no pq (perceptual quality) score"),
    ('{"pq": "n/a", "semantic_consistency": 5}', "no pq (perceptual quality) score"),
    ("PQ: 8", "no sc (semantic consistency) score"),
])
def test_missing_scores_are_named_with_the_start_of_the_answer(answer, missing):
    with pytest.raises(JudgeAnswerError, match=r"has " + missing.replace("(", r"\(").replace(")", r"\)")) as info:
        parse_judgement(answer)
    assert repr(" ".join(answer.split())[:40])[1:-1][:20] in str(info.value)


def test_empty_and_long_answers():
    for empty in ("", "   ", None):
        with pytest.raises(JudgeAnswerError, match="empty"):
            parse_judgement(empty)
    with pytest.raises(JudgeAnswerError) as info:
        parse_judgement("blah " * 200)
    assert str(info.value).endswith("...'") and len(str(info.value)) < 320


def test_judgement_is_a_result_and_redacts_secrets():
    assert judgement("SC 7 PQ 8").values["sc"] == 7
    result = judgement("my key is sk-secret-123", (Secret("sk-secret-123"),))
    assert result.values == {} and "sk-secret-123" not in result.error and "***" in result.error


def test_prompt_quotes_the_instruction_and_has_a_version():
    text = judge_prompt("make the sky red")
    assert '"make the sky red"' in text and '"sc"' in text and '"pq"' in text
    assert len(prompt_version()) == 12
