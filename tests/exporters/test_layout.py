"""Score column names, streaming in row groups, and an export that breaks leaving the earlier one in place."""

from __future__ import annotations

import os

import pytest

from dataflow.exporters import export, exporter, parquet
from dataflow.exporters.examples import ScoreColumns


def test_score_columns_follow_the_naming_rule():
    columns = ScoreColumns()
    columns.observe({"change": {"ssim": 0.9, "no_change": True}, "clip": {"clip_t": 0.3}, "dino": {"dino": 0.8},
                     "judge": {"sc": 8, "reason": "ok"}, "aesthetic": {"score": 5.5},
                     "other": {"ssim": 0.1}, "dino_v3": {"dino": 0.5, "x": {"y": 1}}})
    columns.observe({"change": {"id": 3}, "clip": {"score": 1}, "dino": {"score": 2}})
    columns.observe({"judge": {"sc": 7.5}, "clip": {"clip_t": None}})
    assert dict(columns.columns) == {
        "ssim": "float64", "no_change": "bool", "clip_t": "float64", "dino": "float64", "judge_sc": "float64",
        "judge_reason": "string", "aesthetic_score": "float64", "other_ssim": "float64", "dino_v3_dino": "float64",
        "dino_v3_x_y": "float64", "change_id": "float64", "clip_score": "float64", "dino_score": "float64"}
    flat = columns.flatten({"judge": {"sc": 9}, "change": {"no_change": False}})
    assert flat["judge_sc"] == 9.0 and flat["no_change"] is False and flat["clip_t"] is None


def test_parquet_is_written_in_row_groups_not_held_whole(run, tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 2)
    summary = export(run.scored, "hf", str(tmp_path / "hf"))
    metadata = pq.ParquetFile(summary.shards[0]).metadata
    assert (metadata.num_rows, metadata.num_row_groups) == (4, 2)


def test_an_export_that_breaks_keeps_the_earlier_shards_and_leaves_no_temp_files(run, tmp_path, monkeypatch):
    out = tmp_path / "hf"
    first = export(run.scored, "hf", str(out), shard_size=2)
    before = {path: os.path.getmtime(path) for path in first.shards}
    real, calls = exporter.encode_file, []

    def breaking(*args, **kwargs):
        calls.append(1)
        if len(calls) > 4:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(exporter, "encode_file", breaking)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export(run.scored, "hf", str(out), shard_size=1)
    assert sorted(os.listdir(out / "data")) == sorted(os.path.basename(p) for p in before)
    assert all(os.path.getmtime(path) == mtime for path, mtime in before.items())
