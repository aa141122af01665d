"""ImageEditSelector: best-of-N over scored candidates; every candidate in exactly one of SFT, preference, rejected.

The reward here is a deterministic fake, ``pixel``: the red channel of an edit's top-left pixel, measured by a real
``Metric`` through ``ImageEditEvaluator``, so the ranking is known from the pictures.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError
from dataflow.operators.core_vision import ImageEditEvaluator, ImageEditSelector
from dataflow.operators.core_vision.eval.image_edit_selector import ranking_value
from dataflow.operators.core_vision.eval.metric import Metric, ScoreResult
from dataflow.utils.storage import FileStorage
from tests.conftest import read_jsonl, write_jsonl


class PixelReward(Metric):
    """A fake reward: the red value of the edit's top-left pixel (0-255); higher is better."""

    name = "pixel"

    def score(self, items):
        return [ScoreResult({"overall": float(np.asarray(item.edited)[0, 0, 0])}) for item in items]


def candidate_rows(tmp_path, reds_per_row):
    """Rows whose k-th candidate is a flat picture of red value ``reds[k]``."""
    rows = []
    for i, reds in enumerate(reds_per_row):
        Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / f"src{i}.png")
        paths = []
        for k, red in enumerate(reds):
            path = tmp_path / f"cand{i}_{k}.png"
            Image.new("RGB", (8, 8), (red, 0, 0)).save(path)
            paths.append(str(path))
        rows.append({"id": f"r{i}", "images": f"src{i}.png",
                     "conversations": [{"role": "user", "content": "make it red"}],
                     "output_image": paths, "candidates": len(reds)})
    return rows


def scored_storage(tmp_path, reds_per_row, extra_rows=()):
    source = write_jsonl(tmp_path / "edited.jsonl", candidate_rows(tmp_path, reds_per_row) + list(extra_rows))
    storage = FileStorage(source, cache_path=str(tmp_path / "out"), file_name_prefix="step")
    ImageEditEvaluator([PixelReward(), "change"], source_dir=str(tmp_path)).run(storage.step())
    return storage


def select(storage, **options):
    summary = ImageEditSelector(**options).run(storage.step())
    return (summary, read_jsonl(summary.output_path), read_jsonl(summary.preference_path),
            read_jsonl(summary.rejected_path))


def placements(sft, pairs, rejected):
    """(row id, candidate index) -> the split it went to; a candidate placed twice fails."""
    placed = {}
    for row in sft:
        for _ in row["output_image"]:
            placed.setdefault((row["id"], row["selection"]["chosen"]), []).append("sft")
    for pair in pairs:
        placed.setdefault((pair["id"], pair["rejected_index"]), []).append("preference")
    for row in rejected:
        for entry in row["selection"]["ranked"] if "selection" in row else []:
            if entry["split"] == "rejected":
                placed.setdefault((row["id"], entry["index"]), []).append("rejected")
    assert all(len(where) == 1 for where in placed.values()), placed
    return {key: where[0] for key, where in placed.items()}


def test_best_becomes_sft_worse_ones_pairs_ordered_by_reward_and_margin_rejects_the_close_ones(tmp_path):
    storage = scored_storage(tmp_path, [[100, 250, 30], [60, 60, 200], [10, 200, 195]])
    summary, sft, pairs, rejected = select(storage, best_by="pixel", min_margin=20)
    assert [(r["id"], r["selection"]["chosen"]) for r in sft] == [("r0", 1), ("r1", 2), ("r2", 1)]
    assert [r["output_image"] for r in sft] == [[str(tmp_path / "cand0_1.png")], [str(tmp_path / "cand1_2.png")],
                                                 [str(tmp_path / "cand2_1.png")]]
    assert sft[0]["scores"][0]["pixel"]["overall"] == 250
    assert [[e["index"] for e in r["selection"]["ranked"]] for r in sft] == [[1, 0, 2], [2, 0, 1], [1, 2, 0]]
    got = [(p["id"], p["chosen_index"], p["rejected_index"], p["chosen_score"], p["rejected_score"]) for p in pairs]
    assert got == [("r0", 1, 0, 250, 100), ("r0", 1, 2, 250, 30), ("r1", 2, 0, 200, 60), ("r1", 2, 1, 200, 60),
                   ("r2", 1, 0, 200, 10)]  # 195 is within 20 of 200: no pair
    assert all(p["metric"] == "pixel" and p["chosen_score"] - p["rejected_score"] >= 20 for p in pairs)
    assert pairs[0]["chosen_image"] == str(tmp_path / "cand0_1.png")
    assert pairs[0]["rejected_image"] == str(tmp_path / "cand0_0.png")
    assert "output_image" not in pairs[0] and pairs[0]["conversations"][0]["content"] == "make it red"
    assert [(r["id"], r["output_image"], r["rejected_because"]) for r in rejected] == [
        ("r2", [str(tmp_path / "cand2_2.png")], ["pixel within 20 of the best"])]
    assert placements(sft, pairs, rejected) == {
        ("r0", 1): "sft", ("r0", 0): "preference", ("r0", 2): "preference", ("r1", 2): "sft",
        ("r1", 0): "preference", ("r1", 1): "preference", ("r2", 1): "sft", ("r2", 0): "preference",
        ("r2", 2): "rejected"}
    assert (summary.candidates, summary.sft, summary.preference, summary.rejected) == (9, 3, 5, 1)
    report = json.loads(open(summary.report_path).read())
    assert (report["sft"], report["preference"], report["rejected"], report["candidates"]) == (3, 5, 1, 9)
    assert report["best_by"] == "pixel" and report["min_margin"] == 20


def test_ties_go_to_the_lower_index_and_equal_scores_never_pair(tmp_path):
    storage = scored_storage(tmp_path, [[70, 90, 90, 90]])
    summary, sft, pairs, rejected = select(storage, best_by="pixel.overall")
    assert sft[0]["selection"]["chosen"] == 1
    assert [(p["chosen_index"], p["rejected_index"]) for p in pairs] == [(1, 0)]
    assert rejected[0]["output_image"] == [str(tmp_path / "cand0_2.png"), str(tmp_path / "cand0_3.png")]
    assert (summary.sft, summary.preference, summary.rejected) == (1, 1, 2)
    again = select(scored_storage(tmp_path, [[70, 90, 90, 90]]), best_by="pixel.overall")
    assert again[1] == sft and again[2] == pairs  # deterministic given the scores


def test_a_row_whose_best_fails_a_threshold_keeps_every_candidate_as_a_negative(tmp_path):
    failed = {"id": "gone", "images": "src0.png", "conversations": [{"role": "user", "content": "x"}],
              "output_image": [], "output_image_error": "boom", "candidates": 3}
    storage = scored_storage(tmp_path, [[100, 120, 20], [200, 10, 10]], extra_rows=[failed])
    summary, sft, pairs, rejected = select(storage, best_by="pixel", min={"pixel.overall": 150})
    assert [r["id"] for r in sft] == ["r1"] and [p["rejected_index"] for p in pairs] == [1, 2]
    by_id = {r["id"]: r for r in rejected}
    assert by_id["r0"]["output_image"] == [str(tmp_path / f"cand0_{k}.png") for k in range(3)]
    assert by_id["r0"]["rejected_because"] == ["pixel.overall 120 < min 150"]
    assert by_id["r0"]["selection"]["chosen"] is None
    assert by_id["gone"]["rejected_because"] == ["no edited image"]
    assert (summary.candidates, summary.sft, summary.preference, summary.rejected) == (6, 1, 2, 3)
    assert summary.rows_without_edits == 1


def test_unknown_or_ambiguous_ranking_names_fail_before_writing(tmp_path):
    storage = scored_storage(tmp_path, [[1, 2]])
    with pytest.raises(InputError, match="has the score 'judge.overall'"):
        ImageEditSelector(best_by="judge.overall").run(copy.copy(storage).step())
    with pytest.raises(InputError, match="several values"):
        ImageEditSelector(best_by="change").run(copy.copy(storage).step())
    with pytest.raises(InputError, match="min_margin"):
        ImageEditSelector(best_by="pixel", min_margin=-1)
    assert not (tmp_path / "out" / "step_step2.jsonl").exists()


def test_a_metric_named_alone_ranks_by_its_overall():
    entry = {"judge": {"sc": 8, "pq": 2, "overall": 4.0}, "dino": {"dino": 0.7}, "clip": {"clip_t": 0.3}}
    assert ranking_value(entry, "judge") == 4.0
    assert ranking_value(entry, "dino") == 0.7
    assert ranking_value(entry, "clip_t") == 0.3
    assert ranking_value(entry, "judge.sc") == 8
    assert ranking_value(entry, "nope") is None
