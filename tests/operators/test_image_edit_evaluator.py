"""ImageEditEvaluator through the driver: per-image scores aligned with the edits, row errors, resume."""

import os

import numpy as np
import pytest

from dataflow.core.errors import InputError
from dataflow.operators.core_vision import ImageEditEvaluator
from dataflow.operators.core_vision.eval.metric import Metric, ScoreResult
from dataflow.utils.storage import FileStorage
from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl


class MeanMetric(Metric):
    """The edit's mean pixel value and the instruction's length; fails on instructions containing 'bad'."""

    name = "mean"
    batch_size = 2

    def __init__(self):
        self.seen = []

    def score(self, items):
        self.seen += [item.key for item in items]
        return [ScoreResult(error="cannot read the judge's answer") if "bad" in item.instruction else
                ScoreResult(values={"mean": float(np.asarray(item.edited.convert("L"), dtype=np.float64).mean()),
                                    "sources": len(item.sources), "words": len(item.instruction.split())})
                for item in items]


def scored_rows(tmp_path, rows, metric):
    source = write_jsonl(tmp_path / "edited.jsonl", rows)
    storage = FileStorage(source, cache_path=str(tmp_path / "out"), file_name_prefix="scored")
    summary = ImageEditEvaluator([metric], edited_dir=str(tmp_path)).run(storage.step(), show_progress=False)
    return summary, read_jsonl(summary.output_path)


def test_each_edited_image_gets_its_scores_and_a_metric_failure_is_the_rows_error(tmp_path):
    for name, value in (("black.png", 0), ("white.png", 255)):
        from PIL import Image

        Image.new("RGB", (8, 8), (value,) * 3).save(tmp_path / name)
    write_image(tmp_path / "src.png", 8, 8)
    rows = [
        dict(edit_row("src.png", "make it dark", id="a"), output_image=["black.png", "white.png"]),
        dict(edit_row(["src.png", "src.png"], "two sources", id="b"), output_image=["white.png"]),
        dict(edit_row("src.png", "a bad answer", id="c"), output_image=["black.png"]),
        dict(edit_row("src.png", "failed", id="d"), output_image=[], output_image_error="boom"),
        dict(edit_row("src.png", "gone", id="e"), output_image=["missing.png"]),
    ]
    metric = MeanMetric()
    summary, out = scored_rows(tmp_path, rows, metric)
    by_id = {r["id"]: r for r in out}
    assert [s["mean"]["mean"] for s in by_id["a"]["scores"]] == [0, 255]
    assert by_id["b"]["scores"] == [{"mean": {"mean": 255, "sources": 2, "words": 2}}]
    assert by_id["c"]["scores"] == [] and "cannot read the judge's answer" in by_id["c"]["scores_error"]
    assert by_id["d"]["scores"] == [] and "scores_error" not in by_id["d"]
    assert "missing.png" in by_id["e"]["scores_error"]
    assert (summary.total, summary.failed) == (5, 2)

    again = MeanMetric()
    summary, out2 = scored_rows(tmp_path, rows, again)
    assert again.seen == ["id:c/0"]  # only the failed row is scored again
    assert out2 == out


def test_an_unknown_metric_or_stray_options_are_refused():
    with pytest.raises(InputError, match="unknown metric"):
        ImageEditEvaluator(["sharpness"])
    with pytest.raises(InputError, match="not asked for"):
        ImageEditEvaluator(["change"], metric_options={"clip": {"model": "x"}})
