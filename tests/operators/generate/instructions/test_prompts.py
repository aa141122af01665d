"""Reading a model's answer as instructions: the shapes models answer in, declines, and what is an error."""

from __future__ import annotations

import json

import pytest

from dataflow.operators.core_vision.generate.instructions.prompts import (
    AnswerError,
    generate_prompt,
    parse_instructions,
    parse_rewrite,
    rewrite_prompt,
)
from dataflow.operators.core_vision.generate.instructions.taxonomy import load_taxonomy

TYPES = load_taxonomy().select(["add", "text"])
ITEMS = [{"type": "add", "instruction": "Add a cat on the sofa."},
         {"type": "text", "instruction": "Change the sign to read OPEN."}]


@pytest.mark.parametrize("answer", [
    json.dumps(ITEMS),
    "Sure.\n```json\n" + json.dumps(ITEMS) + "\n```",
    "\n".join(json.dumps(item) for item in ITEMS),  # JSON lines
    json.dumps({"instructions": ITEMS[::-1]}),  # wrapped, in another order
    json.dumps([{"edit_type": "Add", "text": "Add a cat on the sofa."},
                {"Type": "TEXT", "prompt": "Change the sign to read OPEN."}, {"type": "style", "instruction": "x"}]),
])
def test_the_shapes_models_answer_in(answer):
    assert parse_instructions(answer, TYPES) == ITEMS


def test_none_declines_a_type_with_its_reason():
    answer = json.dumps([ITEMS[0], {"type": "text", "instruction": "NONE", "reason": "no text in the image"}])
    assert parse_instructions(answer, TYPES)[1] == {"type": "text", "declined": "no text in the image"}
    for declined in ('"N/A"', "null", '"none."'):
        answer = f'[{json.dumps(ITEMS[0])}, {{"type": "text", "instruction": {declined}}}]'
        assert "declined" in parse_instructions(answer, TYPES)[1]


@pytest.mark.parametrize("answer, message", [
    ("", "the answer is empty"),
    ("I cannot see an image.", "holds no JSON list of {type, instruction} objects for the types asked"),
    (json.dumps(ITEMS[:1]), "the answer has no instruction for type 'text'"),
    (json.dumps([ITEMS[0], {"type": "text"}]), "the answer's item for type 'text' has no instruction"),
])
def test_unusable_answers_say_why(answer, message):
    with pytest.raises(AnswerError, match=message.replace("{", "\\{").replace("}", "\\}")):
        parse_instructions(answer, TYPES)


def test_rewrites_in_json_or_plain_text():
    assert parse_rewrite('{"instruction": "Make the red car blue."}') == "Make the red car blue."
    assert parse_rewrite('"Make the red car blue."\n') == "Make the red car blue."


def test_the_prompts_name_the_types_and_quote_the_instruction():
    prompt = generate_prompt(TYPES)
    assert "- add: Add one new object" in prompt and "- text: " in prompt and "NONE" in prompt
    assert '"make it pop"' in rewrite_prompt("make it pop")
