"""An input whose columns are named otherwise stops before any work, naming the flags and its own columns."""

import pytest

from dataflow.core.columns import check_columns
from dataflow.core.errors import InputError

KEYS = {"image": "images", "conversation": "conversations"}


def test_columns_named_otherwise_are_one_error_suggesting_the_inputs_own_names():
    rows = [{"image": "a.png", "instruction": "Blur it.", "source": "web"}] * 5
    with pytest.raises(InputError) as error:
        check_columns(rows, KEYS, "data/shards")
    assert str(error.value) == (
        "data/shards: no column 'images' or 'conversations' in its first 5 rows (its columns: image, instruction, "
        "source); name the columns to read with --image-key image --conversation-key instruction")


def test_only_the_missing_column_is_named_and_an_unknown_one_gets_a_placeholder():
    rows = [{"images": "a.png", "what": "Blur it."}]
    with pytest.raises(InputError, match=r"no column 'conversations' in its only row \(its columns: images, what\); "
                                         r"name the columns to read with --conversation-key COLUMN$"):
        check_columns(rows, KEYS, "in.jsonl")
    with pytest.raises(InputError, match="--image-key jpg$"):  # a WebDataset sample's members
        check_columns([{"__key__": "s0", "jpg": "ref", "conversations": "Blur it."}], KEYS, "edit.tar")


def test_one_row_with_the_columns_is_enough_and_reading_stops_there():
    def rows():
        yield {"image": "a.png"}  # a row without them fails alone, as a row error
        yield {"images": "a.png", "conversations": "Blur it."}
        raise AssertionError("read past the first row that has every column")

    check_columns(rows(), KEYS, "in.jsonl")
    check_columns([], KEYS, "empty.jsonl")
