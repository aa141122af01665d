"""Resuming reuses a row's earlier result only for the same instruction and images, and only while its image is
whole: a row whose ``id`` stayed while what it asks for changed, or whose output was cut short, is redone."""

import json
import os

import numpy as np
from PIL import Image, ImageOps

from dataflow.io import ImageIO
from dataflow.operators.core_vision import PromptedImageEditGenerator
from dataflow.serving.classic_edit_serving import ClassicEditServing
from dataflow.utils.checkpoint import progress_path
from dataflow.utils.storage import FileStorage
from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl

INSTRUCTIONS = {"Flip it horizontally.": ImageOps.mirror, "Flip it vertically.": ImageOps.flip}


class CountingClassic(ClassicEditServing):
    """The classic backend, noting the keys of the rows it edits."""

    def edit(self, requests):
        self.keys = getattr(self, "keys", []) + [r.key for r in requests]
        return super().edit(requests)


def run(tmp_path, rows, name="in.jsonl"):
    source = write_jsonl(tmp_path / name, rows)
    serving = CountingClassic(image_io=ImageIO(save_path=str(tmp_path / "out")), batch_size=2)
    storage = FileStorage(source, cache_path=str(tmp_path / "out"))
    summary = PromptedImageEditGenerator(serving, save_interval=2).run(storage.step(), show_progress=False)
    return summary, read_jsonl(summary.output_path), getattr(serving, "keys", [])


def id_rows(tmp_path, n, folder="a"):
    os.makedirs(tmp_path / folder, exist_ok=True)
    return [edit_row(write_image(tmp_path / folder / f"{i}.png", 12, 8, seed=hash(folder) % 100 + i),
                     "Flip it horizontally.", id=f"row-{i}") for i in range(n)]


def assert_each_row_holds_its_own_edit(out):
    for row in out:
        (path,) = row["output_image"]
        instruction = row["conversations"][0]["content"]
        expected = INSTRUCTIONS[instruction](Image.open(row["images"]).convert("RGB"))
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(expected)), row["id"]


def test_a_row_whose_instruction_or_image_changed_is_redone_and_counted(tmp_path):
    rows = id_rows(tmp_path, 6)
    run(tmp_path, rows)
    rows[2] = edit_row(rows[2]["images"], "Flip it vertically.", id="row-2")  # same id, another instruction
    write_image(rows[4]["images"], 12, 8, seed=99)  # same id and path, other pixels
    summary, out, edited = run(tmp_path, rows)
    assert sorted(edited) == ["id:row-2", "id:row-4"]
    assert (summary.reused, summary.generated, summary.changed, summary.damaged) == (4, 2, 2, 0)
    assert "redone: 2 whose instruction or image changed" in summary.describe()
    assert_each_row_holds_its_own_edit(out)
    assert run(tmp_path, rows)[2] == []  # and now they are done


def test_another_dataset_reusing_the_ids_in_the_same_folder_gets_its_own_images(tmp_path):
    run(tmp_path, id_rows(tmp_path, 4, folder="first"), name="first.jsonl")
    summary, out, edited = run(tmp_path, id_rows(tmp_path, 4, folder="second"), name="first.jsonl")
    assert (summary.generated, summary.changed, len(edited)) == (4, 4, 4)
    assert_each_row_holds_its_own_edit(out)


def test_unchanged_rows_resume_without_an_edit_and_records_of_earlier_versions_are_trusted(tmp_path):
    rows = id_rows(tmp_path, 4)
    summary, out, _ = run(tmp_path, rows)
    progress = progress_path(summary.output_path)
    lines = open(progress).read().splitlines()
    assert all("signature" in json.loads(line) for line in lines[1:])
    with open(progress, "w") as handle:  # as a version that kept no signatures wrote it
        handle.write("\n".join([lines[0]] + [json.dumps({k: v for k, v in json.loads(line).items()
                                                          if k != "signature"}) for line in lines[1:]]) + "\n")
    again, out_again, edited = run(tmp_path, rows)
    assert (again.reused, edited, out_again) == (4, [], out)


def test_an_output_image_cut_short_is_redone_on_the_rerun(tmp_path):
    rows = id_rows(tmp_path, 3)
    _, out, _ = run(tmp_path, rows)
    damaged = out[1]["output_image"][0]
    whole = open(damaged, "rb").read()
    with open(damaged, "wb") as handle:  # a disk that filled up, or a copy that stopped
        handle.write(whole[: len(whole) - 20])
    summary, out_again, edited = run(tmp_path, rows)
    assert (edited, summary.damaged, summary.reused) == (["id:row-1"], 1, 2)
    assert out_again == out and open(damaged, "rb").read() == whole
