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
    generator = PromptedImageEditInstructionGenerator(TemplateWriter(), **options)
    storage = FileStorage(str(source), cache_path=str(out), file_name_prefix="instructions")
    return generator.run(storage.step(), input_image_key=image_key, show_progress=False)


def classic_run(instructions, out):
    storage = FileStorage(instructions, cache_path=str(out), file_name_prefix="edited")
    serving = ClassicEditServing(image_io=ImageIO(save_path=str(out)))
    return PromptedImageEditGenerator(serving).run(storage.step(), show_progress=False)


def test_parquet_shards_give_rows_whose_embedded_images_the_classic_backend_edits(tmp_path):
    pytest.importorskip("datasets")
    from tests.io.sources.builders import write_parquet_shards

    write_parquet_shards(tmp_path / "data" / "shards", 6, shards=2)
    summary = instruct(tmp_path / "data" / "shards", tmp_path / "work", image_key="image", per_image=2,
                       quotas={"lighting": 6})
    rows = read_jsonl(summary.output_path)
    assert Counter(r["edit_type"] for r in rows)["lighting"] == 6 and len(rows) == 12
    assert all(r["images"].startswith("../data/shards/train-0000") and "#row=" in r["images"] for r in rows)
    assert all(r["instruction"] for r in rows)  # the dataset's own columns are kept
    edited = classic_run(summary.output_path, tmp_path / "edited")
    assert (edited.generated, edited.failed) == (12, 0)


def test_webdataset_samples_keep_their_key_and_fields(tmp_path):
    pytest.importorskip("webdataset")
    from tests.io.sources.builders import write_webdataset

    write_webdataset(tmp_path / "tars", 5, per_shard=3)
    summary = instruct(tmp_path / "tars", tmp_path / "work", image_key="jpg", types=["style"])
    rows = read_jsonl(summary.output_path)
    assert [r["id"] for r in rows] == [f"sample{i:06d}/style/0" for i in range(5)]
    assert [r["json"]["index"] for r in rows] == list(range(5)) and "jpg" not in rows[0]
    assert classic_run(summary.output_path, tmp_path / "edited").failed == 0


def test_quotas_below_the_slots_leave_images_without_a_type(tmp_path):
    (tmp_path / "photos").mkdir()
    for i in range(4):
        write_image(tmp_path / "photos" / f"{i}.png", 16, 16, seed=i)
    summary = instruct(tmp_path / "photos", tmp_path / "work", types=["style", "lighting"],
                       quotas={"style": 1, "lighting": 1})
    assert summary.unplanned == 2 and summary.images == 2
    assert sorted(r["edit_type"] for r in read_jsonl(summary.output_path)) == ["lighting", "style"]


def test_refused_options(tmp_path):
    with pytest.raises(InputError, match="instruction_writer must be an InstructionWriter"):
        PromptedImageEditInstructionGenerator("templates")
    with pytest.raises(InputError, match="the templates backend cannot rewrite"):
        PromptedImageEditInstructionGenerator(TemplateWriter(), rewrite=True)
    with pytest.raises(InputError, match="per_image must be a positive integer"):
        PromptedImageEditInstructionGenerator(TemplateWriter(), per_image=0)
    assert not os.path.exists(tmp_path / "work")
