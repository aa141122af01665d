"""``webdataset`` shards read back with ``webdataset.WebDataset``; ``ai-toolkit`` folders by plain listing."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError
from dataflow.exporters import export
from tests.exporters.conftest import file_bytes

wds = pytest.importorskip("webdataset")


def samples(shards) -> list[dict]:
    dataset = wds.WebDataset([f"file:{path}" for path in shards], shardshuffle=False, empty_check=False)
    return list(dataset)


def pixels(data_or_path) -> np.ndarray:
    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    return np.asarray(Image.open(source))


def test_webdataset_shards_hold_the_members_and_the_pixels(run, tmp_path):
    out = tmp_path / "wds"
    summary = export(run.scored, "webdataset", str(out), shard_size=3)
    assert [os.path.basename(p) for p in summary.shards] == ["train-000000.tar", "train-000001.tar"]
    read = samples(summary.shards)
    assert [s["__key__"] for s in read] == ["00000000_0", "00000001_0", "00000001_1", "00000002_0"]
    assert all("." not in s["__key__"] for s in read)
    for sample in read:
        meta = json.loads(sample["json"])
        assert sample["txt"].decode() == run.instructions[meta["id"]]
        assert sample["edited.png"] == file_bytes(run.edited[(meta["id"], meta["output_index"])])
        assert {"source.png", "edited.png", "txt", "json"} <= set(sample)
    by_key = {s["__key__"]: s for s in read}
    jpeg_source = by_key["00000001_0"]["source.png"]  # the JPEG source, re-encoded losslessly as PNG
    assert jpeg_source[:4] == b"\x89PNG" and np.array_equal(pixels(jpeg_source), pixels(run.sources["b.jpg"]))
    multi = by_key["00000002_0"]
    assert multi["source.png"] == file_bytes(run.sources["a.png"])
    assert multi["source_1.png"] == file_bytes(run.sources["c.png"])
    meta = json.loads(by_key["00000001_1"]["json"])
    assert meta["scores"]["clip"]["clip_t"] == pytest.approx(0.1) and meta["source_files"] == ["b.jpg"]
    assert (out / "README.md").read_text(encoding="utf-8").count('path: "train-*.tar"') == 1


def test_webdataset_default_shard_size_is_one_thousand_and_rejected_are_marked(run, tmp_path):
    summary = export(run.filtered, "webdataset", str(tmp_path / "wds"), rejected=run.rejected,
                     include_failed=True)
    assert len(summary.shards) == 1 and summary.written == 4 and summary.skipped_failed == 1
    assert any("needs an edited image" in note for note in summary.notes)
    marked = {s["__key__"]: json.loads(s["json"]) for s in samples(summary.shards)}
    assert marked["rejected_00000000_0"]["rejected"] is True
    assert marked["rejected_00000000_0"]["rejected_because"] == ["clip_t 0.1 < min 0.2"]
    assert "rejected" not in marked["00000000_0"]


def test_ai_toolkit_targets_captions_and_controls_share_names(run, tmp_path):
    out = tmp_path / "ait"
    (out / "targets").mkdir(parents=True)
    (out / "targets" / "00000099_0.png").write_bytes(b"stale")  # named like an example: an earlier export's
    (out / "targets" / "keep-me.png").write_bytes(b"mine")
    summary = export(run.output, "ai-toolkit", str(out))
    assert summary.written == 4 and summary.exit_code == 0
    keys = ["00000000_0", "00000001_0", "00000001_1", "00000002_0"]
    assert sorted(os.listdir(out / "targets")) == sorted([f"{k}.png" for k in keys] + [f"{k}.txt" for k in keys]
                                                         + ["keep-me.png"])
    assert sorted(os.listdir(out / "control")) == [f"{k}.png" for k in keys]
    assert os.listdir(out / "control_2") == ["00000002_0.png"]
    assert (out / "targets" / "00000001_1.txt").read_text(encoding="utf-8") == "Turn it into a pencil sketch."
    assert (out / "targets" / "00000001_1.png").read_bytes() == file_bytes(run.edited[("r1", 1)])
    assert (out / "control" / "00000000_0.png").read_bytes() == file_bytes(run.sources["a.png"])
    assert np.array_equal(pixels(str(out / "control" / "00000001_0.png")), pixels(run.sources["b.jpg"]))
    with pytest.raises(InputError, match="no place to mark rejected"):
        export(run.filtered, "ai-toolkit", str(out), rejected=run.rejected)
