"""The shipped taxonomy: its types, and the templates' phrases that the classic backend must carry out."""

from __future__ import annotations

import json

import pytest

from dataflow.core.errors import InputError
from dataflow.operators.core_vision.generate.instructions.taxonomy import DEFAULT_TAXONOMY, load_taxonomy
from dataflow.serving.classic.grammar import parse

TAXONOMY = load_taxonomy()
PHRASES = [(t.name, p) for t in TAXONOMY.types for p in t.phrases]


def test_the_default_types_cover_the_common_edit_kinds():
    assert {"add", "remove", "replace", "color_material", "style", "background", "lighting", "text", "count",
            "position_viewpoint", "global_tone"} <= set(TAXONOMY.names())
    assert all(t.description for t in TAXONOMY.types)
    assert {t.name for t in TAXONOMY.types if t.phrases} == {"position_viewpoint", "lighting", "style", "global_tone"}


@pytest.mark.parametrize("name, phrase", PHRASES)
def test_every_template_phrase_is_an_edit_the_classic_backend_does(name, phrase):
    assert parse(phrase)


def test_phrases_of_different_types_make_different_edits():
    operations = {}
    for name, phrase in PHRASES:
        for operation in parse(phrase):
            operations.setdefault(type(operation).__name__ + getattr(operation, "quality", ""), set()).add(name)
    shared = {op: names for op, names in operations.items() if len(names) > 1}
    assert shared == {}  # else two types of one image could ask for the same pixels


def test_names_are_matched_loosely_and_unknown_ones_are_refused():
    assert TAXONOMY.get("Color / Material").name == "color_material"
    assert [t.name for t in TAXONOMY.select(["style", "add", "style"])] == ["style", "add"]
    with pytest.raises(InputError, match="unknown edit type 'sky'; the taxonomy has add, remove"):
        TAXONOMY.get("sky")


def test_an_edited_copy_is_read_and_its_mistakes_named(tmp_path):
    with open(DEFAULT_TAXONOMY, encoding="utf-8") as handle:
        data = json.load(handle)
    data["types"] = data["types"][:2] + [{"name": "weather", "description": "Make it rain."}]
    path = tmp_path / "types.json"
    path.write_text(json.dumps(data))
    custom = load_taxonomy(str(path))
    assert custom.names() == ["add", "remove", "weather"] and custom.version != TAXONOMY.version
    for broken, message in (([{"name": "Bad Name", "description": "x"}], "type 1: 'name' must be lower-case"),
                            ([{"name": "a", "description": ""}], "type 1 \\(a\\): 'description'"),
                            ([{"name": "a", "description": "x"}] * 2, "edit type 'a' is defined twice"),
                            ([{"name": "a", "description": "x", "phrases": "Sepia."}], "'phrases' must be a list")):
        path.write_text(json.dumps({"types": broken}))
        with pytest.raises(InputError, match=message):
            load_taxonomy(str(path))
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_taxonomy(str(path))
