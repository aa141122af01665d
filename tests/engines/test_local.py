"""Crash safety of the local engine: per-row errors, checkpoints, resume, out-of-memory and fingerprints."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError
from dataflow.engines.job import EditJob
from dataflow.engines.local import LocalEngine
from dataflow.engines.records import RecordStore
from dataflow.io import ImageIO
from dataflow.operators.core_vision import PromptedImageEditGenerator
from dataflow.utils.checkpoint import progress_path
from dataflow.utils.storage import FileStorage
from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl
from tests.engines.fakes import InvertServing


def bad_rows(tmp_path):
    """One row for each kind of bad input, keyed by the words its error must contain."""
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "garbage.png").write_bytes(b"GIF89a but not really")
    full = open(write_image(tmp_path / "full.png", 64, 64), "rb").read()
    (tmp_path / "truncated.png").write_bytes(full[: len(full) // 2])
    return {
        "not found": edit_row("missing.png", "Blur it."),
        "is a directory": edit_row("folder.png", "Blur it."),
        "is empty": edit_row("empty.png", "Blur it."),
        "not a readable image": edit_row("garbage.png", "Blur it."),
        "truncated": edit_row("truncated.png", "Blur it."),
        "missing or null": {"images": None, "conversations": [{"role": "user", "content": "Blur it."}]},
        "path string": {"images": 42, "conversations": [{"role": "user", "content": "Blur it."}]},
        "the row has no field 'conversations' (its fields: images)": {"images": "full.png"},
        "'conversations' is empty": {"images": "full.png", "conversations": []},
        "must be a string": {"images": "full.png", "conversations": [{"role": "user", "content": ["x", 1]}]},
    }


def run_operator(tmp_path, rows, serving, save_interval=3, cache="cache"):
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    storage = FileStorage(source, cache_path=str(tmp_path / cache))
    serving.image_io = ImageIO(save_path=str(tmp_path / cache / "images"))
    summary = PromptedImageEditGenerator(serving, save_interval=save_interval).run(storage.step())
    return summary, read_jsonl(summary.output_path)


def good_rows(tmp_path, n, prefix="g"):
    return [edit_row(os.path.basename(write_image(tmp_path / f"{prefix}{i}.png", 16 + i, 16, seed=i)), f"edit {i}")
            for i in range(n)]


def test_bad_rows_get_clear_errors_while_good_rows_are_edited(tmp_path):
    bad = bad_rows(tmp_path)
    good = good_rows(tmp_path, 3)
    rows = good[:1] + list(bad.values()) + good[1:]
    summary, out = run_operator(tmp_path, rows, InvertServing())
    assert (summary.total, summary.generated, summary.failed, summary.exit_code) == (13, 3, 10, 1)
    by_image = {json.dumps(r.get("images")) + json.dumps(r.get("conversations")): r for r in out}
    for fragment, row in bad.items():
        result = by_image[json.dumps(row.get("images")) + json.dumps(row.get("conversations"))]
        assert result["output_image"] == []
        assert fragment in result["output_image_error"]
    for row in (out[0], out[-2], out[-1]):
        assert "output_image_error" not in row
        (path,) = row["output_image"]
        source = Image.open(tmp_path / row["images"]).convert("RGB")
        assert np.array_equal(np.asarray(Image.open(path)), 255 - np.asarray(source))


def test_a_decompression_bomb_is_an_error_row(tmp_path, monkeypatch):
    write_image(tmp_path / "bomb.png", 200, 200)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    _, out = run_operator(tmp_path, [edit_row("bomb.png", "Blur it.")], InvertServing())
    assert "decompression bomb" in out[0]["output_image_error"]


def test_a_rerun_skips_finished_rows_and_leaves_their_files_untouched(tmp_path):
    rows = good_rows(tmp_path, 5)
    first, out = run_operator(tmp_path, rows, InvertServing())
    stamps = {p: os.stat(p).st_mtime_ns for r in out for p in r["output_image"]}
    serving = InvertServing()
    second, again = run_operator(tmp_path, rows, serving)
    assert (first.generated, second.generated, second.reused) == (5, 0, 5)
    assert serving.calls == [] and again == out
    assert stamps == {p: os.stat(p).st_mtime_ns for p in stamps}


def test_failed_rows_run_again_on_the_next_run(tmp_path):
    rows = good_rows(tmp_path, 2) + [edit_row("late.png", "Blur it.")]
    first, out = run_operator(tmp_path, rows, InvertServing())
    assert first.failed == 1 and "not found" in out[2]["output_image_error"]
    write_image(tmp_path / "late.png", 20, 10)
    serving = InvertServing()
    second, out = run_operator(tmp_path, rows, serving)
    assert (second.generated, second.reused, second.failed) == (1, 2, 0)
    assert len(out[2]["output_image"]) == 1 and "output_image_error" not in out[2]


def test_an_edited_input_keeps_results_with_their_rows_not_their_positions(tmp_path):
    rows = [dict(r, id=f"r{i}") for i, r in enumerate(good_rows(tmp_path, 4))]
    _, out = run_operator(tmp_path, rows, InvertServing())
    paths = {r["id"]: r["output_image"] for r in out}
    pixels = {p: np.asarray(Image.open(p)).copy() for ps in paths.values() for p in ps}
    new = dict(good_rows(tmp_path, 1, prefix="new")[0], id="new")
    edited = [rows[3], new, rows[1], rows[0]]  # reordered, one dropped, one added
    serving = InvertServing()
    summary, out = run_operator(tmp_path, edited, serving)
    assert serving.calls == [["id:new"]] and summary.reused == 3
    for row in out:
        if row["id"] != "new":
            assert row["output_image"] == paths[row["id"]]
    # The new row sits at index 1, where r1's files already are: it must not overwrite them.
    assert out[1]["output_image"] != paths["r1"]
    for p, before in pixels.items():
        assert np.array_equal(np.asarray(Image.open(p)), before)


def test_changed_parameters_are_refused_with_a_way_forward(tmp_path):
    rows = good_rows(tmp_path, 2)
    run_operator(tmp_path, rows, InvertServing(tag="v1"))
    with pytest.raises(InputError, match=r"tag: 'v1' -> 'v2'.*another cache path.*delete that file"):
        run_operator(tmp_path, rows, InvertServing(tag="v2"))


def test_progress_is_on_disk_every_save_interval_rows(tmp_path):
    rows = good_rows(tmp_path, 9)
    progress = progress_path(str(tmp_path / "cache" / "dataflow_cache_step_step1.jsonl"))
    seen = []

    def count_checkpointed(requests):  # called before each batch: how many rows are durable by now?
        lines = open(progress).read().splitlines()[1:] if os.path.exists(progress) else []
        seen.append(len(lines))

    run_operator(tmp_path, rows, InvertServing(batch_size=1, on_batch=count_checkpointed), save_interval=3)
    # Batch i is edited while batch i-1 is still being saved, so i-1 rows are finished when it starts; of those,
    # every complete group of 3 is on disk.
    assert seen == [3 * (max(0, i - 1) // 3) for i in range(9)] == [0, 0, 0, 0, 3, 3, 3, 6, 6]


def test_a_failure_of_the_backend_keeps_every_finished_row(tmp_path):
    rows = good_rows(tmp_path, 6)

    def explode_on_third_batch(requests, calls=[]):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("device lost")

    with pytest.raises(RuntimeError, match="device lost"):
        run_operator(tmp_path, rows, InvertServing(batch_size=2, on_batch=explode_on_third_batch), save_interval=50)
    serving = InvertServing(batch_size=2)
    summary, out = run_operator(tmp_path, rows, serving, save_interval=50)
    assert (summary.reused, summary.generated) == (4, 2) and len(serving.calls) == 1


def test_a_torn_last_line_in_the_progress_file_is_tolerated(tmp_path):
    rows = good_rows(tmp_path, 3)
    summary, _ = run_operator(tmp_path, rows, InvertServing())
    progress = progress_path(summary.output_path)
    with open(progress, "a") as handle:
        handle.write('{"key": "sha256:abc", "index": 1, "outp')
    summary, out = run_operator(tmp_path, rows, InvertServing())
    assert summary.reused == 3 and all(len(r["output_image"]) == 1 for r in out)
    assert all(json.loads(line) for line in open(progress).read().splitlines() if line.endswith("}"))


def test_identical_rows_are_distinct_rows(tmp_path):
    write_image(tmp_path / "a.png", 16, 16)
    rows = [edit_row("a.png", "Blur it.")] * 3
    summary, out = run_operator(tmp_path, rows, InvertServing())
    assert summary.generated == 3
    assert len({r["output_image"][0] for r in out}) == 3


def test_rows_not_reached_are_marked_in_the_output(tmp_path):
    write_image(tmp_path / "a.png", 16, 16)
    job = EditJob(rows=[edit_row("a.png", "x")], serving=InvertServing(), image_io=ImageIO(str(tmp_path / "o")),
                  base_dir=str(tmp_path), progress_file=str(tmp_path / "p.jsonl"))
    assert "not processed" in job.output_rows(RecordStore(job.image_io))[0]["output_image_error"]
    rows, summary = LocalEngine().run(job, show_progress=False)
    assert rows[0]["output_image"] and summary.exit_code == 0


def test_a_row_is_checkpointed_only_after_its_images_are_on_disk(tmp_path, monkeypatch):
    from dataflow.utils.checkpoint import Checkpoint

    seen = []
    original_add = Checkpoint.add

    def checked_add(self, record):
        seen.append(all(os.path.isfile(p) for p in record["output"]) and bool(record["output"]))
        original_add(self, record)

    monkeypatch.setattr(Checkpoint, "add", checked_add)
    summary, _ = run_operator(tmp_path, good_rows(tmp_path, 7), InvertServing(batch_size=2))
    assert summary.generated == 7 and seen == [True] * 7


def test_decoder_warnings_are_counted_in_the_summary_not_printed(tmp_path, capfd):
    from tests.io.corpus import tiff_file

    (tmp_path / "warns.tif").write_bytes(tiff_file(24, 16, extra_tags=((284, 3, 2, 1),)))
    rows = [edit_row("warns.tif", "edit"), good_rows(tmp_path, 1)[0]]
    summary, out = run_operator(tmp_path, rows, InvertServing())
    assert summary.generated == 2 and summary.warnings >= 1
    assert "image decoder warnings" in summary.describe()
    assert "Warning" not in capfd.readouterr().err


def test_a_row_with_several_images_fails_alone_on_a_one_image_backend(tmp_path):
    rows = good_rows(tmp_path, 2)
    two = dict(rows[0], images=[rows[0]["images"], rows[1]["images"]])
    summary, out = run_operator(tmp_path, [two] + rows, InvertServing())
    assert (summary.generated, summary.failed) == (2, 1)
    assert out[0]["output_image"] == []
    assert "has 2 images" in out[0]["output_image_error"] and "--backend api" in out[0]["output_image_error"]


class CountingRows:
    """A re-iterable row source that counts the rows read so far (as ``FileStorage.stream()`` would read them)."""

    def __init__(self, rows):
        self.rows = rows
        self.read = 0

    def __iter__(self):
        for row in self.rows:
            self.read += 1
            yield row


def test_editing_starts_while_the_input_is_still_being_read(tmp_path):
    image = os.path.basename(write_image(tmp_path / "a.png", 16, 16))
    source = CountingRows([edit_row(image, f"edit {i}", id=i) for i in range(3000)])
    read_at_first_batch = []
    serving = InvertServing(batch_size=4, on_batch=lambda requests: read_at_first_batch.append(source.read))
    job = EditJob(rows=source, serving=serving, image_io=ImageIO(str(tmp_path / "o")), base_dir=str(tmp_path),
                  progress_file=str(tmp_path / "p.jsonl"), save_interval=500)
    rows, summary = LocalEngine().run(job, show_progress=False)
    assert read_at_first_batch[0] < 1000  # the first batch ran long before the 3,000th row was read
    assert summary.total == summary.generated == 3000
    out = list(rows)  # a streamed source gives the output rows as an iterator, reading the source again
    assert [r["id"] for r in out] == list(range(3000)) and all(len(r["output_image"]) == 1 for r in out)


def test_buckets_are_formed_over_a_bounded_window():
    from dataflow.engines.tasks import Bucketer, RowTask

    bucketer = Bucketer(batch_size=4, window=8)
    tasks = [RowTask(i, f"k{i}", ["x.png"], "x", bucket=i % 5) for i in range(40)]  # 5 buckets, 8 rows each
    batches = [batch for task in tasks for batch in bucketer.add(task)] + list(bucketer.flush())
    assert sorted(t.index for b in batches for t in b) == list(range(40))  # every row once
    assert all(len({t.bucket for t in b}) == 1 and len(b) <= 4 for b in batches)
    held, peak = set(), 0  # rows taken in but not yet handed out never exceed the window (plus the row in hand)
    bucketer = Bucketer(batch_size=4, window=8)
    for task in tasks:
        held.add(task.index)
        for batch in bucketer.add(task):
            held -= {t.index for t in batch}
        peak = max(peak, len(held))
    assert peak <= 9


def test_a_lone_surrogate_in_any_field_is_kept_escaped_and_the_rerun_resumes(tmp_path):
    rows = [dict(r, id=f"caf\ud800{i}", note="x\udfff") for i, r in enumerate(good_rows(tmp_path, 3))]
    rows[1]["conversations"][0]["content"] += " \ud800"
    summary, out = run_operator(tmp_path, rows, InvertServing())
    assert (summary.generated, summary.failed) == (3, 0)
    assert out == [dict(r, output_image=o["output_image"]) for r, o in zip(rows, out)]
    assert "\\ud800" in open(summary.output_path, encoding="utf-8").read()  # valid UTF-8, the JSON escape
    serving = InvertServing()
    again, out_again = run_operator(tmp_path, rows, serving)
    assert (again.reused, serving.calls) == (3, []) and out_again == out


def test_without_a_terminal_progress_lines_are_logged_while_the_run_goes_on(tmp_path, monkeypatch, caplog):
    import time

    from dataflow.engines import driver

    monkeypatch.setattr(driver, "LOG_EVERY_S", 0.2, raising=False)
    rows = good_rows(tmp_path, 6)
    serving = InvertServing(batch_size=1, on_batch=lambda requests: time.sleep(0.15))
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    serving.image_io = ImageIO(save_path=str(tmp_path / "out"))
    storage = FileStorage(source, cache_path=str(tmp_path / "out"))
    with caplog.at_level("INFO", logger="dataflow"):  # pytest's stderr is no terminal: tqdm draws no bar
        PromptedImageEditGenerator(serving).run(storage.step())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("editing: ")]
    assert len(lines) >= 2, lines
    assert all(" rows/s" in line and "/6 rows (" in line for line in lines[1:]), lines
    assert any("left" in line for line in lines), lines


def test_an_instruction_longer_than_the_serving_reads_fails_its_row_before_any_work(tmp_path):
    write_image(tmp_path / "a.png", 16, 16)
    rows = [edit_row("a.png", "Blur it.") | {"id": "short"}, edit_row("a.png", "x" * 5_000) | {"id": "long"}]
    write_jsonl(tmp_path / "in.jsonl", rows)
    serving = InvertServing(image_io=ImageIO(save_path=str(tmp_path / "out")))
    serving.max_instruction_chars = 100
    storage = FileStorage(str(tmp_path / "in.jsonl"), cache_path=str(tmp_path / "out")).step()
    PromptedImageEditGenerator(serving).run(storage, input_image_key="images", input_conversation_key="conversations",
                                            output_image_key="output_image")
    by_id = {row["id"]: row for row in read_jsonl(storage.write_path)}
    assert by_id["short"]["output_image"] and by_id["long"]["output_image"] == []
    assert by_id["long"]["output_image_error"] == ("the instruction is 5,000 characters long; InvertServing reads at "
                                                   "most 100")
    assert serving.calls == [["id:short"]]
