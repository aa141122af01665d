"""``PromptedImageEditInstructionGenerator`` on dataset inputs (parquet shards, WebDataset tars), whose written rows
the classic backend then edits, and the options it refuses."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from dataflow.core.errors import InputError
from dataflow.io import ImageIO
from dataflow.operators.core_vision import PromptedImageEditGenerator, PromptedImageEditInstructionGenerator
from dataflow.operators.core_vision.generate.instructions import TemplateWriter
from dataflow.serving.classic.serving import ClassicEditServing
from dataflow.utils.storage import FileStorage
from tests.conftest import read_jsonl, write_image

pytest.importorskip("pyarrow")


def instruct(source, out, image_key="images", **options):
    """The summary, and the storage whose next step reads the written rows."""
    generator = PromptedImageEditInstructionGenerator(TemplateWriter(), **options)
    storage = FileStorage(str(source), cache_path=str(out), file_name_prefix="step")
    return generator.run(storage.step(), input_image_key=image_key, show_progress=False), storage


def classic_run(storage, out):
    """The next step of the same storage: the classic backend edits the written rows."""
    serving = ClassicEditServing(image_io=ImageIO(save_path=str(out)))
    return PromptedImageEditGenerator(serving).run(storage.step(), show_progress=False)


def test_parquet_shards_give_rows_whose_embedded_images_the_classic_backend_edits(tmp_path):
    pytest.importorskip("datasets")
    from tests.io.sources.builders import write_parquet_shards

    write_parquet_shards(tmp_path / "data" / "shards", 6, shards=2)
    summary, storage = instruct(tmp_path / "data" / "shards", tmp_path / "work", image_key="image", per_image=2,
                                quotas={"lighting": 6})
    rows = read_jsonl(summary.output_path)
    assert Counter(r["edit_type"] for r in rows)["lighting"] == 6 and len(rows) == 12
    assert all(r["images"].startswith("train-0000") and "#row=" in r["images"] for r in rows)  # as the input's
    assert all(r["instruction"] for r in rows)  # the dataset's own columns are kept
    edited = classic_run(storage, tmp_path / "edited")
    assert (edited.generated, edited.failed) == (12, 0)


def test_webdataset_samples_keep_their_key_and_fields(tmp_path):
    pytest.importorskip("webdataset")
    from tests.io.sources.builders import write_webdataset

    write_webdataset(tmp_path / "tars", 5, per_shard=3)
    summary, storage = instruct(tmp_path / "tars", tmp_path / "work", image_key="jpg", types=["style"])
    rows = read_jsonl(summary.output_path)
    assert [r["id"] for r in rows] == [f"sample{i:06d}/style/0" for i in range(5)]
    assert [r["json"]["index"] for r in rows] == list(range(5)) and "jpg" not in rows[0]
    assert classic_run(storage, tmp_path / "edited").failed == 0


def test_quotas_below_the_slots_leave_images_without_a_type(tmp_path):
    (tmp_path / "photos").mkdir()
    for i in range(4):
        write_image(tmp_path / "photos" / f"{i}.png", 16, 16, seed=i)
    summary, storage = instruct(tmp_path / "photos", tmp_path / "work", types=["style", "lighting"],
                                quotas={"style": 1, "lighting": 1})
    assert summary.unplanned == 2 and summary.images == 2
    rows = read_jsonl(summary.output_path)
    assert sorted(r["edit_type"] for r in rows) == ["lighting", "style"]
    assert all(r["images"] in {f"{i}.png" for i in range(4)} for r in rows)  # relative to the input folder
    assert classic_run(storage, tmp_path / "edited").generated == 2  # a folder of images starts a pipeline too


def test_refused_options(tmp_path):
    with pytest.raises(InputError, match="instruction_writer must be an InstructionWriter"):
        PromptedImageEditInstructionGenerator("templates")
    with pytest.raises(InputError, match="the templates backend cannot rewrite"):
        PromptedImageEditInstructionGenerator(TemplateWriter(), rewrite=True)
    with pytest.raises(InputError, match="rewriting keeps one instruction per row"):
        PromptedImageEditInstructionGenerator(TemplateWriter(), rewrite=True, quotas={"style": 1})
    with pytest.raises(InputError, match="per_image must be a positive integer"):
        PromptedImageEditInstructionGenerator(TemplateWriter(), per_image=0)
    assert not os.path.exists(tmp_path / "work")


def test_absolute_image_paths_stay_absolute_and_relative_ones_follow_the_output(tmp_path):
    from tests.conftest import write_jsonl

    (tmp_path / "data").mkdir()
    absolute = write_image(tmp_path / "elsewhere.png", 16, 16)
    write_image(tmp_path / "data" / "near.png", 16, 16)
    source = write_jsonl(tmp_path / "data" / "rows.jsonl", [{"images": absolute}, {"images": ["near.png", absolute]}])
    generator = PromptedImageEditInstructionGenerator(TemplateWriter(), types=["style"])
    storage = FileStorage(source, cache_path=str(tmp_path / "work"), file_name_prefix="step")
    summary = generator.run(storage.step(), paths_relative_to=str(tmp_path / "work"), show_progress=False)
    assert [r["images"] for r in read_jsonl(summary.output_path)] == [absolute, ["../data/near.png", absolute]]
