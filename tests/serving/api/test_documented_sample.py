"""DataFlow-MM's documented API sample, run unchanged (apart from paths and values) against the local server."""

import io
import logging
import os

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import ServiceError
from dataflow.io import ImageIO
from dataflow.operators.core_vision import PromptedImageEditGenerator
from dataflow.serving.api_image_gen_serving import APIImageGenServing
from dataflow.utils.storage import FileStorage
from tests.conftest import read_jsonl, write_image, write_jsonl
from tests.serving.api.server import MODEL, expected_edit

FORMATS = ["openai", "gemini"]


def make_rows(folder, n, prompt=lambda i: f"edit row {i}", images_per_row=1):
    rows = []
    for i in range(n):
        names = []
        for j in range(images_per_row):
            name = f"in{i}_{j}.png" if j else (f"in{i}.png" if i % 2 else f"in{i}.jpg")
            write_image(folder / name, 16 + i % 5 * 4, 16 + j * 8, seed=100 * i + j)
            names.append(name)
        rows.append({"id": f"row-{i}", "images": names if images_per_row > 1 else names[0],
                     "conversations": [{"role": "user", "content": prompt(i)}]})
    return write_jsonl(folder / "in.jsonl", rows)


def run_sample(folder, api_url, api_format, api_key, jsonl, save_interval=10, **options):
    """The documented sample, with its paths and values filled in (and ``options``, the serving's newer
    arguments)."""
    image_save_path = str(folder / "cache_local" / "image_edit_api" / "images")
    storage = FileStorage(first_entry_file_name=jsonl, cache_path=str(folder / "cache_local" / "image_edit_api"),
                          file_name_prefix="dataflow_cache_step", cache_type="jsonl")
    serving = APIImageGenServing(
        api_url=api_url,
        image_io=ImageIO(save_path=image_save_path),
        Image_gen_task="imageedit",
        batch_size=4,
        api_format=api_format,
        model_name=MODEL,
        api_key=api_key,
        **options,
    )
    generator = PromptedImageEditGenerator(image_edit_serving=serving, save_interval=save_interval)
    summary = generator.run(storage=storage.step(), input_image_key="images",
                            input_conversation_key="conversations", output_image_key="output_image")
    return summary, serving


def check_pairing(folder, out_rows):
    """Each row's output is the server's edit of that row's own input images and instruction, pixel by pixel."""
    reader = ImageIO()
    for row in out_rows:
        names = row["images"] if isinstance(row["images"], list) else [row["images"]]
        inputs = [reader.read(str(folder / name)) for name in names]
        (path,) = row["output_image"]
        expected = expected_edit(inputs, row["conversations"][-1]["content"])
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), expected), row["id"]


def all_text_written(folder) -> str:
    """Every file under ``folder``, as text (binary bytes decoded leniently)."""
    chunks = []
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                chunks.append(handle.read().decode("utf-8", errors="replace"))
    return "\n".join(chunks)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_documented_sample_writes_each_rows_own_edit(tmp_path, edit_server, fmt):
    jsonl = make_rows(tmp_path, 6)
    summary, _ = run_sample(tmp_path, edit_server.url, fmt, "test-key", jsonl)
    assert (summary.generated, summary.failed) == (6, 0)
    out = read_jsonl(summary.output_path)
    assert [r["id"] for r in out] == [f"row-{i}" for i in range(6)]
    check_pairing(tmp_path, out)
    assert not edit_server.violations


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_with_several_images_send_them_all_in_order(tmp_path, edit_server, fmt):
    jsonl = make_rows(tmp_path, 3, images_per_row=2)
    summary, _ = run_sample(tmp_path, edit_server.url, fmt, "test-key", jsonl)
    assert summary.failed == 0, read_jsonl(summary.output_path)
    out = read_jsonl(summary.output_path)
    check_pairing(tmp_path, out)
    reader = ImageIO()
    for row in out:
        (received,) = [r for r in edit_server.edits() if r.prompt == row["conversations"][-1]["content"]]
        sent = [reader.read(str(tmp_path / name)) for name in row["images"]]
        assert len(received.images) == 2 and all(np.array_equal(np.asarray(a), b)
                                                 for a, b in zip(sent, received.images))


def test_forty_rows_run_concurrently_survive_faults_report_refusals_and_resume(tmp_path, edit_server):
    edit_server.delay = 0.2
    refused = {7, 23}
    jsonl = make_rows(tmp_path, 40, prompt=lambda i: f"REFUSE row {i}" if i in refused else f"edit row {i}")
    for i in (3, 11, 30):
        edit_server.inject(f"edit row {i}", "429")
    for i in (5, 18, 33, 34):
        edit_server.inject(f"edit row {i}", "500")
    summary, serving = run_sample(tmp_path, edit_server.url, "openai", "test-key", jsonl)
    out = read_jsonl(summary.output_path)
    assert (summary.generated, summary.failed) == (38, 2)
    for i, row in enumerate(out):
        if i in refused:
            assert row["output_image"] == [] and "moderation_blocked" in row["output_image_error"]
    check_pairing(tmp_path, [r for i, r in enumerate(out) if i not in refused])
    usage = serving.usage()
    assert usage["requests"] == 47 and usage["retries"] == 7 and usage["refusals"] == 2
    sent = len(edit_server.edits())

    # A rerun pays for nothing: done rows are reused, and a refusal is final (asking again would be refused again).
    summary, serving = run_sample(tmp_path, edit_server.url, "openai", "test-key", jsonl)
    assert (summary.reused, summary.generated, summary.failed) == (40, 0, 2)
    assert edit_server.prompts()[sent:] == [] and serving.usage()["requests"] == 0
    assert read_jsonl(summary.output_path) == out
    assert edit_server.max_in_flight >= 6, edit_server.max_in_flight  # the engine runs max_concurrency rows at once


def test_a_bad_key_stops_the_run_after_at_most_max_concurrency_requests(tmp_path, edit_server, capfd):
    key = "sk-bad-key-0123456789abcdef"
    jsonl = make_rows(tmp_path, 40)
    edit_server.delay = 0.05
    with pytest.raises(ServiceError) as info:
        run_sample(tmp_path, edit_server.url, "openai", key, jsonl)
    message = str(info.value)
    assert "HTTP 401" in message and "check DF_API_KEY" in message and edit_server.url in message
    assert len(edit_server.edits()) <= 8
    captured = capfd.readouterr()
    for text in (message, captured.out, captured.err, all_text_written(tmp_path)):
        assert key not in text and "abcdef" not in text


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_key_appears_in_no_file_output_or_log_of_a_run(tmp_path, edit_server, capfd, fmt):
    key = "sk-proj-SECRETSECRET-42"
    edit_server.key = key
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    loggers = [logging.getLogger(name) for name in ("dataflow", "httpx", "httpcore")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        jsonl = make_rows(tmp_path, 4, prompt=lambda i: ["edit", "REFUSE", "NOIMAGE", "ECHOKEY"][i] + f" {i}")
        edit_server.retry_after = "0.1"
        edit_server.inject("edit 0", "429", "503")
        summary, serving = run_sample(tmp_path, edit_server.url, fmt, key, jsonl, save_interval=1)
        assert summary.generated >= 1
        serving.close()
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
    captured = capfd.readouterr()
    assert "HTTP Request" in log.getvalue()  # httpx did log, at debug level
    for text in (log.getvalue(), captured.out, captured.err, all_text_written(tmp_path), repr(serving),
                 str(serving.fingerprint())):
        assert key not in text and "SECRETSECRET" not in text


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_camera_jpeg_goes_as_it_is_in_a_request_under_4_mb(tmp_path, edit_server, camera_jpeg, fmt):
    edit_server.thumbnail = 64  # the server edits a small copy: the request is what is measured here
    jsonl = write_jsonl(tmp_path / "in.jsonl", [{"images": camera_jpeg, "conversations": [
        {"role": "user", "content": "make it warmer"}]}])
    summary, serving = run_sample(tmp_path, edit_server.url, fmt, "test-key", jsonl)
    assert (summary.generated, summary.failed) == (1, 0)
    (received,) = edit_server.edits()
    with open(camera_jpeg, "rb") as handle:
        assert received.uploads == [("image/jpeg", handle.read())]  # the file's own bytes
    assert received.size < 4_000_000, received.size
    assert serving.usage()["request_bytes"] == received.size


def test_a_row_of_several_user_turns_is_edited_turn_by_turn_when_asked(tmp_path, edit_server):
    write_image(tmp_path / "a.png", 24, 16, seed=1)
    rows = [{"id": "two", "images": "a.png", "conversations": [
        {"role": "user", "content": "make it red"}, {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "now add a hat"}]},
        {"id": "one", "images": "a.png", "conversations": [{"role": "user", "content": "make it blue"}]},
        {"id": "bad", "images": "a.png", "conversations": [{"role": "user", "content": [{"type": "image"}]},
                                                           {"role": "user", "content": "make it green"}]}]
    jsonl = write_jsonl(tmp_path / "in.jsonl", rows)
    summary, _ = run_sample(tmp_path, edit_server.url, "gemini", "test-key", jsonl, multi_turn=True)
    assert (summary.generated, summary.failed) == (2, 1)
    source = ImageIO().read(str(tmp_path / "a.png"))
    two, one, bad = read_jsonl(summary.output_path)
    assert "user message 1 in 'conversations' must be a string or a list of text parts" in bad["output_image_error"]
    red = expected_edit([source], "make it red")
    assert np.array_equal(np.asarray(Image.open(two["output_image"][0]).convert("RGB")),
                          expected_edit([red], "now add a hat"))
    assert np.array_equal(np.asarray(Image.open(one["output_image"][0]).convert("RGB")),
                          expected_edit([source], "make it blue"))
    assert sorted(r.turns for r in edit_server.edits()) == [1, 1, 2] and not edit_server.violations
