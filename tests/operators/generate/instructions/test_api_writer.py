"""The instruction generator with ``APIWriter`` against a local VLM server on 127.0.0.1: grounded rows, types and
quotas, declines, malformed answers as row errors, retries, resuming without sending anything twice."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from dataflow.core.errors import InputError, ServiceError
from dataflow.operators.core_vision import PromptedImageEditInstructionGenerator
from dataflow.utils.storage import FileStorage
from tests.conftest import read_jsonl, write_jsonl
from tests.operators.generate.instructions.chat_server import MODEL, InstructionServer, solid

pytest.importorskip("httpx")

from dataflow.operators.core_vision.generate.instructions.api_writer import APIWriter  # noqa: E402

KEY = "vlm-key"
OBJECT_TYPES = ["add", "remove", "replace", "color_material"]


@pytest.fixture
def server():
    server = InstructionServer(key=KEY).start()
    yield server
    server.stop()


def photos(folder, colours) -> str:
    """One solid picture per colour, each of its own size (so each request names its own image)."""
    folder.mkdir(exist_ok=True)
    for i, colour in enumerate(colours):
        solid(colour, 30 + i, 20 + i).save(folder / f"{i:02d}-{colour}.png")
    return str(folder)


def generate(server, source, out, key=KEY, **options):
    writer = APIWriter(server.url, MODEL, key, retry_delay=0, max_concurrency=4)
    generator = PromptedImageEditInstructionGenerator(writer, **options)
    storage = FileStorage(source, cache_path=str(out), file_name_prefix="instructions")
    try:
        return generator.run(storage.step(), show_progress=False)
    finally:
        writer.close()


def test_each_row_is_grounded_in_its_own_image_and_the_quotas_hold(server, tmp_path):
    folder = photos(tmp_path / "photos", ["red"] * 8)
    summary = generate(server, folder, tmp_path / "out", types=OBJECT_TYPES, per_image=2,
                       quotas={"add": 6, "remove": 2})
    rows = read_jsonl(summary.output_path)
    assert server.violations == []
    assert len(server.requests) == 8  # one request per image
    assert Counter(r["edit_type"] for r in rows) == {"add": 6, "remove": 2, "replace": 4, "color_material": 4}
    assert summary.planned == {"add": 6, "remove": 2, "replace": 4, "color_material": 4}
    assert summary.written == summary.planned and summary.exit_code == 0
    for row in rows:
        index = int(row["images"].split("/")[-1][:2])
        assert row["images"] == f"{index:02d}-red.png"  # relative to the input folder, as the next step reads it
        content = row["conversations"][0]["content"]
        assert "red" in content and f"{30 + index}x{20 + index} picture" in content  # the server saw this image
        assert row["provenance"]["backend"] == "api" and row["provenance"]["model"] == MODEL
        assert row["provenance"]["prompt_version"]
    per_image = Counter(r["image_id"] for r in rows)
    assert set(per_image.values()) == {2} and len(per_image) == 8
    assert len({r["id"] for r in rows}) == 16
    asked = Counter(t for request in server.requests for t in request["types"])
    assert asked == summary.planned  # each image was asked for exactly its planned types


def test_declines_duplicates_and_malformed_answers(server, tmp_path):
    folder = photos(tmp_path / "photos", ["green", "blue", "magenta", "cyan", "yellow"])
    summary = generate(server, folder, tmp_path / "out", types=["add", "remove", "text"], per_image=3)
    rows = read_jsonl(summary.output_path)
    rejected = read_jsonl(summary.rejected_path)
    by_colour = Counter(r["images"].split("-")[-1][:-4] for r in rows)
    # green declines text (2 written), magenta's second is a near-duplicate, yellow needed a retry
    assert by_colour == {"green": 2, "magenta": 2, "yellow": 3}
    declined = [r for r in rejected if "declined" in r]
    assert [(r["edit_type"], r["declined"]) for r in declined] == [("text", "there is no text")]
    (duplicate,) = [r for r in rejected if "duplicate_of" in r]
    assert duplicate["edit_type"] == "remove" and duplicate["duplicate_of"] == "add"
    errors = {r["images"].split("-")[-1][:-4]: r["instruction_error"] for r in rejected if "instruction_error" in r}
    assert set(errors) == {"blue", "cyan"}
    assert "holds no JSON list" in errors["blue"] and "blue; I see nothing" in errors["blue"]
    assert errors["cyan"].startswith("type 'text': the answer reads as a reply")
    assert summary.failed == 2 and summary.exit_code == 1
    assert summary.declined == {"text": 1} and summary.duplicates == 1
    assert summary.usage["retries"] == 1 and summary.usage["requests"] == 6


def test_a_rerun_sends_only_what_failed(server, tmp_path):
    folder = photos(tmp_path / "photos", ["red", "blue", "green"])
    first = generate(server, folder, tmp_path / "out", types=OBJECT_TYPES, per_image=2)
    assert first.failed == 1 and len(server.requests) == 3
    before = {r["id"]: r for r in read_jsonl(first.output_path)}
    second = generate(server, folder, tmp_path / "out", types=OBJECT_TYPES, per_image=2)
    assert len(server.requests) == 4 and server.requests[-1]["colour"] == "blue"  # only the failed image again
    assert (second.reused, second.asked, second.failed) == (2, 1, 1)
    assert {r["id"]: r for r in read_jsonl(second.output_path)} == before  # the same plan, the same rows

    third = generate(server, folder, tmp_path / "out", types=OBJECT_TYPES, per_image=3)  # a new plan per image
    assert len(server.requests) == 7 and (third.asked, third.reused) == (3, 0)
    assert len(read_jsonl(third.output_path)) == 6  # 3 types for red and green; blue failed again


def test_rows_of_a_jsonl_and_their_fields(server, tmp_path):
    data = tmp_path / "data"
    photos(data, ["red", "red"])
    source = write_jsonl(data / "images.jsonl", [{"id": "first", "images": "00-red.png", "license": "cc0"},
                                                 {"id": "second", "images": "01-red.png", "license": "cc-by"}])
    summary = generate(server, source, tmp_path / "out", types=["add"], per_image=1)
    rows = read_jsonl(summary.output_path)
    assert [(r["id"], r["image_id"], r["license"], r["images"]) for r in rows] == [
        ("first/add/0", "first", "cc0", "00-red.png"), ("second/add/0", "second", "cc-by", "01-red.png")]

    # rows with ids: a rerun under another plan asks again (the plan is part of each image's identity)
    summary = generate(server, source, tmp_path / "out", types=["add", "remove"], per_image=2)
    assert len(server.requests) == 4 and summary.reused == 0
    assert Counter(r["edit_type"] for r in read_jsonl(summary.output_path)) == {"add": 2, "remove": 2}


def test_rewrite_keeps_the_original_beside_the_rewrite(server, tmp_path):
    data = tmp_path / "data"
    photos(data, ["red", "green"])
    source = write_jsonl(data / "edits.jsonl", [
        {"id": "a", "images": "00-red.png", "conversations": [{"role": "user", "content": "make it nicer"}]},
        {"id": "b", "images": "01-green.png", "conversations": [{"role": "user", "content": "add a dog"}]}])
    summary = generate(server, source, tmp_path / "out", rewrite=True)
    rows = read_jsonl(summary.output_path)
    assert [(r["id"], r["original_instruction"]) for r in rows] == [("a/rewrite", "make it nicer"),
                                                                    ("b/rewrite", "add a dog")]
    assert rows[0]["conversations"] == [{"role": "user",
                                         "content": "Make the red 30x20 picture show this: make it nicer"}]
    assert rows[1]["source_id"] == "b" and "edit_type" not in rows[1]
    assert sorted(r["instruction"] for r in server.requests) == ["add a dog", "make it nicer"]


def test_a_refused_key_stops_the_run_without_showing_it(server, tmp_path):
    folder = photos(tmp_path / "photos", ["red"])
    with pytest.raises(ServiceError, match="the API key was refused; check DF_API_KEY") as info:
        generate(server, folder, tmp_path / "out", key="wrong-key-98765", types=["add"])
    assert "wrong-key-98765" not in str(info.value)


def test_options_are_checked_before_anything_is_sent(server, tmp_path):
    for bad in ({"model": ""}, {"max_concurrency": 0}, {"temperature": -1}, {"extra_body": {"messages": []}}):
        options = {"api_url": server.url, "model": MODEL, **bad}
        with pytest.raises(InputError):
            APIWriter(**options)
    assert server.requests == []
    assert json.dumps(APIWriter(server.url, MODEL, KEY).fingerprint()).find(KEY) == -1
