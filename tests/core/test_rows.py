import os

import pytest

from dataflow.core.errors import RowError
from dataflow.core.rows import image_path, image_paths, instruction, row_key


def test_instruction_is_the_last_user_message_of_a_multi_turn_conversation():
    row = {"conversations": [
        {"role": "user", "content": "Make it blue."},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "  Now change the vase to red.  "},
        {"role": "assistant", "content": "ok"},
    ]}
    assert instruction(row, "conversations") == "Now change the vase to red."


def test_instruction_accepts_sharegpt_and_content_parts():
    assert instruction({"c": [{"from": "human", "value": "<image>\nBlur it."}]}, "c") == "Blur it."
    parts = [{"type": "image"}, {"type": "text", "text": "Flip it."}]
    assert instruction({"c": [{"role": "user", "content": parts}]}, "c") == "Flip it."


@pytest.mark.parametrize("value, fragment", [
    (None, "missing"),
    ([], "empty"),
    ("   ", "empty"),
    ([{"role": "assistant", "content": "hi"}], "no user message"),
    ([{"role": "user", "content": 42}], "must be a string"),
    ([{"role": "user", "content": "   "}], "empty"),
])
def test_bad_conversations_raise_a_row_error_naming_the_problem(value, fragment):
    with pytest.raises(RowError, match=fragment):
        instruction({"conversations": value}, "conversations")


def test_a_plain_text_field_is_the_instruction_itself():
    assert instruction({"txt": "  Make it\nred. "}, "txt") == "Make it red."


def test_relative_paths_resolve_against_the_input_folder_and_absolute_ones_stay(tmp_path):
    assert image_path({"images": "a/b.png"}, "images", str(tmp_path)) == str(tmp_path / "a" / "b.png")
    assert image_path({"images": ["x.png"]}, "images", str(tmp_path)) == str(tmp_path / "x.png")
    absolute = os.path.abspath("/data/x.png")
    assert image_path({"images": absolute}, "images", str(tmp_path)) == absolute


def test_a_row_may_hold_several_images_in_order(tmp_path):
    paths = image_paths({"images": ["b.png", "/abs/a.png"]}, "images", str(tmp_path))
    assert paths == [str(tmp_path / "b.png"), os.path.abspath("/abs/a.png")]
    assert image_path({"images": ["b.png", "a.png"]}, "images", str(tmp_path)) == str(tmp_path / "b.png")


@pytest.mark.parametrize("value, fragment", [
    (None, "missing or null"), (3, "path string"), ("", "empty string"), ([], "empty list"),
    (["a.png", 7], "'images' item 2 must be a path string"), (["a.png", None], "item 2 is missing"),
])
def test_bad_image_fields_raise_a_row_error(value, fragment, tmp_path):
    with pytest.raises(RowError, match=fragment):
        image_paths({"images": value}, "images", str(tmp_path))


def test_row_key_prefers_the_id_field_and_otherwise_hashes_image_and_conversation():
    conv = [{"role": "user", "content": "Blur it."}]
    assert row_key({"id": 7, "images": "a.png", "conversations": conv}, "images", "conversations") == "id:7"
    a = row_key({"images": "a.png", "conversations": conv}, "images", "conversations")
    b = row_key({"images": "b.png", "conversations": conv}, "images", "conversations")
    assert a != b and a == row_key({"conversations": conv, "images": "a.png"}, "images", "conversations")
