import json

import pandas as pd
import pytest

from dataflow.core.errors import InputError
from dataflow.utils.storage import FileStorage
from tests.conftest import read_jsonl, write_jsonl

ROWS = [
    {"id": "a", "images": "x.png", "conversations": [{"role": "user", "content": "Blur it."}], "score": 0.5},
    {"id": "b", "images": ["y.png"], "conversations": [{"role": "user", "content": "Flip it."}], "extra": {"k": 1}},
]


def test_step_zero_reads_the_input_and_operator_n_writes_step_n(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    storage = FileStorage(source, cache_path=str(tmp_path / "cache"), file_name_prefix="dataflow_cache_step")
    first = storage.step()
    assert first.read("dict") == ROWS
    written = first.write(first.read("dict") + [{"id": "c"}])
    assert written == str(tmp_path / "cache" / "dataflow_cache_step_step1.jsonl")
    second = storage.step()
    assert [r["id"] for r in second.read("dict")] == ["a", "b", "c"]
    assert second.write_path.endswith("dataflow_cache_step_step2.jsonl")


def test_rows_keep_every_field_unchanged_through_a_jsonl_round_trip(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    storage = FileStorage(source, cache_path=str(tmp_path)).step()
    storage.write(storage.read("dict"))
    assert read_jsonl(storage.write_path) == ROWS


@pytest.mark.parametrize("cache_type", ["jsonl", "json", "csv", "parquet"])
def test_each_format_round_trips_nested_fields(tmp_path, cache_type):
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    storage = FileStorage(source, cache_path=str(tmp_path / "c"), cache_type=cache_type).step()
    storage.write(storage.read("dict"))
    rows = storage.step().read("dict")
    assert [r["conversations"] for r in rows] == [r["conversations"] for r in ROWS]
    assert rows[1]["images"] == ["y.png"]


@pytest.mark.parametrize("suffix", ["json", "csv", "parquet"])
def test_the_input_format_is_taken_from_the_extension(tmp_path, suffix):
    path = tmp_path / f"in.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps([{"images": "x.png", "conversations": ROWS[0]["conversations"]}]))
    else:  # tabular files usually hold the conversation as JSON text
        frame = pd.DataFrame([{"images": "x.png", "conversations": json.dumps(ROWS[0]["conversations"])}])
        frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path)
    rows = FileStorage(str(path), cache_path=str(tmp_path)).step().read("dict")
    assert rows[0]["images"] == "x.png"
    assert rows[0]["conversations"] == ROWS[0]["conversations"]


def test_dataframe_output(tmp_path):
    frame = FileStorage(write_jsonl(tmp_path / "in.jsonl", ROWS), cache_path=str(tmp_path)).step().read("dataframe")
    assert isinstance(frame, pd.DataFrame) and list(frame["id"]) == ["a", "b"]


def test_a_malformed_line_is_reported_with_file_and_line_number(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [ROWS[0], "", '{"images": "x.png", oops', ROWS[1]])
    with pytest.raises(InputError, match=r"in\.jsonl line 3: invalid JSON"):
        FileStorage(source, cache_path=str(tmp_path)).step().read("dict")


def test_a_line_that_is_not_an_object_is_reported(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [ROWS[0], "[1, 2]"])
    with pytest.raises(InputError, match="line 2: expected a JSON object"):
        FileStorage(source, cache_path=str(tmp_path)).step().read("dict")


def test_malformed_lines_can_be_skipped_explicitly(tmp_path, caplog):
    source = write_jsonl(tmp_path / "in.jsonl", [ROWS[0], "not json", ROWS[1]])
    rows = FileStorage(source, cache_path=str(tmp_path), skip_malformed_lines=True).step().read("dict")
    assert [r["id"] for r in rows] == ["a", "b"]


def test_missing_input_and_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="input file not found"):
        FileStorage(str(tmp_path / "nope.jsonl")).step().read("dict")
    with pytest.raises(InputError, match="cache_type"):
        FileStorage("x.jsonl", cache_type="xml")
    with pytest.raises(InputError, match="unsupported input format"):
        (tmp_path / "in.txt").write_text("{}")
        FileStorage(str(tmp_path / "in.txt")).step().read("dict")
    with pytest.raises(InputError, match="step"):
        FileStorage("x.jsonl").read("dict")


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv"])
def test_a_utf8_byte_order_mark_is_not_part_of_the_first_row(tmp_path, suffix):
    row = {"images": "x.png", "conversations": ROWS[0]["conversations"]}
    text = {"jsonl": json.dumps(row) + "\n", "json": json.dumps([row]),
            "csv": pd.DataFrame([{"images": "x.png", "conversations": json.dumps(row["conversations"])}]).to_csv(
                index=False)}[suffix]
    path = tmp_path / f"in.{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # as Windows editors save UTF-8
    rows = FileStorage(str(path), cache_path=str(tmp_path)).step().read("dict")
    assert rows == [row]


def test_a_stream_reads_the_file_again_on_each_pass_and_counts_its_rows(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [ROWS[0], "", ROWS[1]])
    stream = FileStorage(source, cache_path=str(tmp_path)).step().stream()
    assert list(stream) == ROWS and list(stream) == ROWS
    assert [n for n, _ in stream.numbered()] == [1, 3] and stream.count() == 2


def test_rows_written_from_an_iterator_are_streamed_to_the_step_file(tmp_path):
    storage = FileStorage(write_jsonl(tmp_path / "in.jsonl", ROWS), cache_path=str(tmp_path / "c")).step()
    path = storage.write(dict(r, n=i) for i, r in enumerate(storage.stream()))
    assert read_jsonl(path) == [dict(r, n=i) for i, r in enumerate(ROWS)]


LONE_SURROGATE = "caf\ud800"  # what json.loads makes of "caf\\ud800", and what a bad decoder upstream leaves


@pytest.mark.parametrize("cache_type", ["jsonl", "json"])
def test_a_lone_surrogate_in_a_field_is_written_escaped_and_reads_back_the_same(tmp_path, cache_type):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "caf\\ud800", "note": "ok"}\n{"id": "b", "note": "caf\\udfff"}\n', encoding="ascii")
    storage = FileStorage(str(source), cache_path=str(tmp_path / "c"), cache_type=cache_type).step()
    rows = storage.read("dict")
    assert rows[0]["id"] == LONE_SURROGATE
    path = storage.write(rows)
    assert "\\ud800" in open(path, encoding="utf-8").read()  # valid UTF-8, the surrogate as a JSON escape
    assert storage.step().read("dict") == rows


@pytest.mark.parametrize("cache_type", ["csv", "parquet"])
def test_a_lone_surrogate_in_a_table_format_is_written_as_its_escape(tmp_path, cache_type):
    storage = FileStorage(write_jsonl(tmp_path / "in.jsonl", ROWS), cache_path=str(tmp_path / "c"),
                          cache_type=cache_type).step()
    storage.write([dict(ROWS[0], note=LONE_SURROGATE), ROWS[1]])
    rows = storage.step().read("dict")
    assert rows[0]["note"] == "caf\\ud800" and rows[1]["id"] == "b"


NON_UTF8_LINE = b'{"images": "caf\xe9.png"}'  # Latin-1 text in a UTF-8 file
DEEP_LINE = b"[" * 100_000 + b"]" * 100_000  # valid JSON that no recursive parser can take


def jsonl_bytes(path, lines) -> str:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


@pytest.mark.parametrize("poison, problem", [(NON_UTF8_LINE, r"not UTF-8 text \(byte 0xe9 at column 16\)"),
                                             (DEEP_LINE, r"invalid JSON \(nested too deeply to read\)")])
def test_a_non_utf8_byte_or_deep_nesting_is_a_malformed_line_named_by_file_and_line(tmp_path, poison, problem):
    source = jsonl_bytes(tmp_path / "in.jsonl", [json.dumps(ROWS[0]).encode(), poison, json.dumps(ROWS[1]).encode()])
    with pytest.raises(InputError, match=rf"in\.jsonl line 2: {problem}\. Fix the line, or skip malformed lines"):
        FileStorage(source, cache_path=str(tmp_path)).step().read("dict")


def test_a_non_utf8_byte_and_deep_nesting_are_skipped_like_any_malformed_line(tmp_path, caplog):
    source = jsonl_bytes(tmp_path / "in.jsonl", [json.dumps(ROWS[0]).encode(), NON_UTF8_LINE, DEEP_LINE,
                                                 json.dumps(ROWS[1]).encode()])
    stream = FileStorage(source, cache_path=str(tmp_path), skip_malformed_lines=True).step().stream()
    assert [(n, r["id"]) for n, r in stream.numbered()] == [(1, "a"), (4, "b")]
    assert "line 2 skipped: not UTF-8 text" in caplog.text
    assert "line 3 skipped: invalid JSON (nested too deeply" in caplog.text
