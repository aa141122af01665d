"""The rules an instruction must pass, and near-duplicates within one image."""

from __future__ import annotations

import pytest

from dataflow.operators.core_vision.generate.instructions.quality import QualityRules

RULES = QualityRules()


@pytest.mark.parametrize("text", ["Add a red kite above the barn.", "Sepia.", "Remove the man's hat."])
def test_instructions_pass(text):
    assert RULES.problem(text) is None


@pytest.mark.parametrize("text, message", [
    ("", "the instruction is empty"),
    ("   ", "the instruction is empty"),
    ("a " * 61, "is 61 words long (at most 60)"),
    ("x" * 301, "is 301 characters long (at most 300)"),
    ("123 456", "holds no words"),
    ("I'm sorry, I can't help with that.", "reads as a reply"),
    ("The image shows a dog on a lawn.", "reads as a reply"),
    ("Could you make the sky purple?", "is a question"),
    ('{"type": "add", "instruction": "Add a cat."}', "leftover JSON"),
])
def test_non_instructions_are_refused_with_the_rule(text, message):
    assert message in RULES.problem(text)


def test_near_duplicates_by_normalised_text_and_by_ratio():
    earlier = ["Add a red kite above the barn.", "Turn the car blue."]
    assert RULES.duplicate_of("add the red kite above the barn!", earlier) == 0  # equal once normalised
    assert RULES.duplicate_of("Add a red kite above the barns.", earlier) == 0  # ratio >= 0.9
    assert RULES.duplicate_of("Turn the car green.", earlier) is None  # ratio below 0.9
    assert QualityRules(similarity=0.6).duplicate_of("Turn the car green.", earlier) == 1
