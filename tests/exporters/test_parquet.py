"""``hf`` and ``ip2p`` exports load with ``datasets`` as Image features holding the files' own bytes."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from dataflow.exporters import export
from tests.exporters.conftest import file_bytes

datasets = pytest.importorskip("datasets")

SCORE_COLUMNS = ["changed_fraction", "ssim", "no_change", "clip_t", "clip_i", "dino", "judge_sc", "judge_pq",
                 "judge_overall", "judge_reason"]


def load(folder, tmp_path, **kwargs):
    return datasets.load_dataset("parquet", data_dir=str(folder), cache_dir=str(tmp_path / "hf-cache"),
                                 **kwargs)["train"]


def raw(dataset, *columns):
    """The dataset with ``columns`` left as their stored ``{"bytes", "path"}`` structs."""
    for column in columns:
        feature = dataset.features[column]
        undecoded = datasets.Image(decode=False)
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(column, undecoded)
        else:  # a list of images: List in datasets 4+, a plain list before
            dataset = dataset.cast_column(column, getattr(datasets, "List", list)(undecoded) if hasattr(
                datasets, "List") else [undecoded])
    return dataset


def test_hf_export_has_image_features_the_files_bytes_and_every_score(run, tmp_path):
    out = tmp_path / "hf"
    summary = export(run.scored, "hf", str(out))
    assert (summary.written, summary.rows, summary.skipped_failed, summary.exit_code) == (4, 4, 1, 0)
    assert [os.path.relpath(p, out) for p in summary.shards] == [os.path.join("data", "train-00000-of-00001.parquet")]

    dataset = load(out, tmp_path)
    for column in ("source_image", "edited_image"):
        assert isinstance(dataset.features[column], datasets.Image)
    assert isinstance(dataset.features["source_images"].feature, datasets.Image)
    assert isinstance(dataset[0]["edited_image"], Image.Image)
    assert dataset.column_names[:6] == ["id", "output_index", "instruction", "source_image", "source_images",
                                        "edited_image"]
    assert set(SCORE_COLUMNS) <= set(dataset.column_names)
    assert "edit_type" not in dataset.column_names  # only where rows name their edit type
    assert [(r["id"], r["output_index"]) for r in dataset] == [("r0", 0), ("r1", 0), ("r1", 1), ("r2", 0)]

    stored = raw(dataset, "source_image", "edited_image", "source_images")
    for row in stored:
        assert row["edited_image"]["bytes"] == file_bytes(run.edited[(row["id"], row["output_index"])])
        assert row["instruction"] == run.instructions[row["id"]]
    by_id = {row["id"]: row for row in stored}
    assert by_id["r1"]["source_image"]["bytes"] == file_bytes(run.sources["b.jpg"])  # the JPEG, as it is
    assert [s["bytes"] for s in by_id["r2"]["source_images"]] == [file_bytes(run.sources["a.png"]),
                                                                 file_bytes(run.sources["c.png"])]
    assert by_id["r2"]["source_image"]["bytes"] == file_bytes(run.sources["a.png"])

    second = dataset[2]  # r1's second edit
    assert second["clip_t"] == pytest.approx(0.1) and second["judge_sc"] == 7.0 and second["no_change"] is False
    assert second["judge_reason"] == "looks right" and second["dino"] == pytest.approx(0.8)


def test_the_card_loads_the_folder_and_names_the_model_and_parameters(run, tmp_path):
    out = tmp_path / "hf"
    export(run.scored, "hf", str(out))
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nconfigs:\n") and "num_examples: 4" in card
    assert "black-forest-labs/FLUX.1-Kontext-dev" in card and "| steps | `28` |" in card
    assert "| guidance_scale | `2.5` |" in card and "## Scoring" in card
    dataset = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))["train"]  # via the card
    assert len(dataset) == 4 and isinstance(dataset.features["edited_image"], datasets.Image)


def test_include_failed_keeps_the_failed_row_with_a_null_image_and_its_error(run, tmp_path):
    out = tmp_path / "hf"
    summary = export(run.output, "hf", str(out), include_failed=True)
    assert (summary.written, summary.failed_written, summary.skipped_failed) == (5, 1, 0)
    dataset = load(out, tmp_path)
    failed = [row for row in dataset if row["id"] == "r3"]
    assert len(failed) == 1 and failed[0]["edited_image"] is None and failed[0]["output_index"] is None
    assert failed[0]["error"] == "the model refused the prompt"
    assert isinstance(failed[0]["source_image"], Image.Image)
    assert "clip_t" not in dataset.column_names  # an unscored file has no score columns


def test_rejected_examples_are_marked_and_the_card_lists_the_filters(run, tmp_path):
    out = tmp_path / "hf"
    plain = export(run.filtered, "hf", str(tmp_path / "kept"))
    assert plain.written == 3  # r1's second edit was rejected
    summary = export(run.filtered, "hf", str(out), rejected=run.rejected)
    assert (summary.written, summary.rejected_written, summary.skipped_failed) == (4, 1, 1)
    rows = list(load(out, tmp_path))
    rejected = [row for row in rows if row["rejected"]]
    assert [(r["id"], r["rejected_because"]) for r in rejected] == [("r1", ["clip_t 0.1 < min 0.2"])]
    assert all(row["rejected_because"] == [] for row in rows if not row["rejected"])
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "## Filters" in card and "| `clip_t < min 0.2` | 1 |" in card and "| `no edited image` | 1 |" in card


def test_shards_split_by_size_and_a_rerun_replaces_them(run, tmp_path):
    out = tmp_path / "hf"
    (out / "data").mkdir(parents=True)
    (out / "data" / "notes.txt").write_text("mine")
    first = export(run.scored, "hf", str(out), shard_size=3)
    assert sorted(os.listdir(out / "data")) == ["notes.txt", "train-00000-of-00002.parquet",
                                                "train-00001-of-00002.parquet"]
    assert first.shards == sorted(first.shards)
    assert len(load(out, tmp_path)) == 4
    export(run.scored, "hf", str(out), shard_size=1)
    assert len([n for n in os.listdir(out / "data") if n.endswith(".parquet")]) == 4
    export(run.scored, "hf", str(out))
    assert sorted(os.listdir(out / "data")) == ["notes.txt", "train-00000-of-00001.parquet"]
    assert len(load(out, tmp_path)) == 4


def test_jpeg_image_format_re_encodes_only_non_jpeg_edits(run, tmp_path):
    out = tmp_path / "hf"
    export(run.output, "hf", str(out), image_format="jpeg")
    row = raw(load(out, tmp_path), "edited_image")[0]
    assert row["edited_image"]["bytes"][:3] == b"\xff\xd8\xff" and row["edited_image"]["path"].endswith(".jpg")


def test_ip2p_has_diffusers_columns_as_image_features(run, tmp_path):
    out = tmp_path / "ip2p"
    summary = export(run.output, "ip2p", str(out), include_failed=True)
    assert summary.written == 4 and summary.skipped_failed == 1 and "needs an edited image" in summary.notes[0]
    dataset = load(out, tmp_path)
    assert dataset.column_names == ["input_image", "edit_prompt", "edited_image"]
    assert isinstance(dataset.features["input_image"], datasets.Image)
    assert isinstance(dataset.features["edited_image"], datasets.Image)
    first = dataset[0]
    assert first["edit_prompt"] == "Make the sky pink."
    expected = np.asarray(Image.open(run.edited[("r0", 0)]))
    assert np.array_equal(np.asarray(first["edited_image"]), expected)
    assert np.array_equal(np.asarray(first["input_image"]), np.asarray(Image.open(run.sources["a.png"])))
    assert Image.open(io.BytesIO(raw(dataset, "input_image")[1]["input_image"]["bytes"])).format == "JPEG"
