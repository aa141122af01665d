"""``PromptedImageEditGenerator(candidates=N)``: N seeded edits per row, one resumable job, rows marked."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError
from dataflow.core.request import EditResult
from dataflow.core.seeding import image_seed
from dataflow.core.serving import ImageEditServing
from dataflow.io import ImageIO
from dataflow.operators.core_vision import PromptedImageEditGenerator
from dataflow.utils.storage import FileStorage
from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl


class SeededServing(ImageEditServing):
    """A stand-in for a generative backend: output image k of a row is a flat grey whose level comes from
    ``image_seed(seed, row key, k)``, so candidates differ exactly as a diffusion model's seeds make them differ.
    Records every (row key, images asked) it edits; ``fail_after`` batches, it raises (the run itself breaks)."""

    def __init__(self, image_io, seed: int = 0, fail_after=None, num_images: int = 1):
        self.image_io = image_io
        self.seed = seed
        self.fail_after = fail_after
        self.batch_size = 1
        self.num_images_per_request = num_images
        self.edited: list[tuple[str, int]] = []

    def fingerprint(self) -> dict:
        return {"serving": "seeded", "seed": self.seed}

    def edit(self, requests):
        if self.fail_after is not None and len(self.edited) >= self.fail_after:
            raise RuntimeError("the device fell over")
        results = []
        for request in requests:
            self.edited.append((request.key, request.num_images))
            levels = [image_seed(self.seed, request.key, k) % 256 for k in range(request.num_images)]
            results.append(EditResult(images=[Image.new("RGB", request.image.size, (v, v, v)) for v in levels]))
        return results


def rows_and_storage(tmp_path, n_rows: int = 5):
    for i in range(n_rows):
        write_image(tmp_path / f"p{i}.png", 16, 12, seed=i)
    jsonl = write_jsonl(tmp_path / "in.jsonl", [edit_row(f"p{i}.png", "make it better", id=f"r{i}")
                                                for i in range(n_rows)])
    return lambda: FileStorage(jsonl, cache_path=str(tmp_path / "out"), file_name_prefix="edited")


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_each_row_gets_n_distinct_seeded_candidates_and_the_mark(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = rows_and_storage(tmp_path, 3)
    serving = SeededServing(ImageIO(save_path="out"))
    summary = PromptedImageEditGenerator(serving, candidates=3).run(storage().step())
    rows = read_jsonl(summary.output_path)
    assert [row["candidates"] for row in rows] == [3, 3, 3]
    assert all(len(row["output_image"]) == 3 for row in rows)
    for row in rows:
        levels = [np.asarray(Image.open(p))[0, 0, 0] for p in row["output_image"]]
        assert len(set(levels)) == 3  # three seeds, three different pictures
    assert {n for _, n in serving.edited} == {3}


def test_an_interrupted_candidates_run_resumes_without_regenerating_or_duplicating(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = rows_and_storage(tmp_path, 5)
    first = SeededServing(ImageIO(save_path="out"), fail_after=2)
    with pytest.raises(RuntimeError, match="fell over"):
        PromptedImageEditGenerator(first, save_interval=1, candidates=3).run(storage().step())
    done_first = {key for key, _ in first.edited}
    assert len(done_first) == 2
    kept = {p: digest(p) for p in sorted(str(q) for q in (tmp_path / "out").rglob("*.png"))}
    assert len(kept) == 6  # two rows, three candidates each
    stamps = {p: os.stat(p).st_mtime_ns for p in kept}

    second = SeededServing(ImageIO(save_path="out"))
    summary = PromptedImageEditGenerator(second, save_interval=1, candidates=3).run(storage().step())
    assert (summary.generated, summary.reused, summary.failed) == (3, 2, 0)
    assert not done_first & {key for key, _ in second.edited}  # no candidate of a finished row made again
    rows = read_jsonl(summary.output_path)
    paths = [p for row in rows for p in row["output_image"]]
    assert len(paths) == 15 and len(set(paths)) == 15  # every candidate once
    assert all(len(row["output_image"]) == 3 and row["candidates"] == 3 for row in rows)
    assert {p: digest(p) for p in kept} == kept and {p: os.stat(p).st_mtime_ns for p in kept} == stamps
    assert len(list((tmp_path / "out").rglob("*.png"))) == 15


def test_a_rerun_with_another_count_is_refused_not_mixed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = rows_and_storage(tmp_path, 2)
    PromptedImageEditGenerator(SeededServing(ImageIO(save_path="out")), candidates=2).run(storage().step())
    with pytest.raises(InputError, match="candidates"):
        PromptedImageEditGenerator(SeededServing(ImageIO(save_path="out")), candidates=3).run(storage().step())


def test_a_serving_built_for_several_images_conflicts(tmp_path):
    with pytest.raises(InputError, match="already makes 2 images per row"):
        PromptedImageEditGenerator(SeededServing(None, num_images=2), candidates=3)
    with pytest.raises(InputError, match="candidates"):
        PromptedImageEditGenerator(SeededServing(None), candidates=0)
