"""ImageEditFilter on hand-made score rows: which images are kept, which rejected, and why."""

import pytest

from dataflow.core.errors import InputError
from dataflow.operators.core_vision import ImageEditFilter
from dataflow.operators.core_vision.eval.image_edit_filter import rejected_path_for, rule_of, score_value
from dataflow.utils.storage import FileStorage
from tests.conftest import read_jsonl, write_jsonl


def scores(clip_t=0.3, dino=0.5, ssim=0.5, no_change=False, overall=7.0):
    return {"change": {"changed_fraction": 0.2, "ssim": ssim, "no_change": no_change},
            "clip": {"clip_i": 0.8, "clip_t": clip_t}, "dino": {"dino": dino},
            "judge": {"sc": 7, "pq": 7, "overall": overall, "reason": "fine"}}


def row(i, *entries):
    return {"id": i, "images": f"in{i}.png", "output_image": [f"out/sample_{i}_{k}.png" for k in range(len(entries))],
            "scores": list(entries)}


def run(tmp_path, rows, **options):
    source = write_jsonl(tmp_path / "scored.jsonl", rows)
    storage = FileStorage(source, cache_path=str(tmp_path / "out"), file_name_prefix="filtered")
    summary = ImageEditFilter(**options).run(storage.step())
    return summary, read_jsonl(summary.output_path), read_jsonl(summary.rejected_path)


def test_names_address_nested_scores_by_path_or_by_their_one_leaf():
    entry = scores(clip_t=0.25, dino=0.9)
    assert score_value(entry, "clip_t") == (True, 0.25)
    assert score_value(entry, "dino") == (True, 0.9)
    assert score_value(entry, "judge.overall") == (True, 7.0)
    assert score_value(entry, "change.ssim") == (True, 0.5)
    assert score_value(entry, "missing") == (False, None)
    with pytest.raises(InputError, match="ambiguous"):
        score_value({"a": {"x": 1}, "b": {"x": 2}}, "x")


def test_rows_split_into_kept_and_rejected_with_the_failed_rules_named(tmp_path):
    rows = [
        row(0, scores()),                                      # passes everything
        row(1, scores(clip_t=0.1)),                            # off-prompt
        row(2, scores(dino=0.99, no_change=True)),             # nothing changed
        row(3, scores(), scores(overall=2.0)),                 # two edits: one kept, one rejected
        {"id": 4, "images": "in4.png", "output_image": [], "output_image_error": "boom", "scores": []},
    ]
    summary, kept, rejected = run(tmp_path, rows, min={"clip_t": 0.2, "judge.overall": 6},
                                  max={"dino": 0.95, "change.ssim": 0.98}, drop_no_change=True)
    assert [r["id"] for r in kept] == [0, 3]
    assert kept[1]["output_image"] == ["out/sample_3_0.png"] and kept[1]["scores"] == [scores()]
    because = {r["id"]: r["rejected_because"] for r in rejected}
    assert because == {1: ["clip_t 0.1 < min 0.2"], 2: ["dino 0.99 > max 0.95", "no_change"],
                       3: ["judge.overall 2 < min 6"], 4: ["no edited image"]}
    assert [r["output_image"] for r in rejected if r["id"] == 3] == [["out/sample_3_1.png"]]
    assert (summary.kept_rows, summary.kept_images, summary.rejected_rows, summary.rejected_images) == (2, 2, 4, 3)
    assert summary.by_rule["no_change"] == 1 and summary.by_rule["no edited image"] == 1
    assert summary.by_rule["clip_t < min 0.2"] == 1 and summary.by_rule["dino > max 0.95"] == 1
    assert summary.rejected_path == rejected_path_for(summary.output_path)
    assert summary.rejected_path.endswith("filtered_step1_rejected.jsonl")


def test_a_name_no_row_has_is_an_error_before_anything_is_written(tmp_path):
    with pytest.raises(InputError, match="clip_x"):
        run(tmp_path, [row(0, scores())], min={"clip_x": 0.2})
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    with pytest.raises(InputError, match="score the edits first"):
        run(tmp_path, [{"id": 0, "images": "a.png", "output_image": ["x.png"]}], min={"clip_t": 0.2})


def test_a_filter_needs_a_rule():
    with pytest.raises(InputError, match="at least one threshold"):
        ImageEditFilter()


def test_a_reason_states_the_failed_condition_with_the_value_that_failed_it(tmp_path):
    """It used to list the rule as written ("change.ssim <= 0.95" for an SSIM of 0.97): the opposite of what
    happened."""
    rows = [row(0, scores(ssim=0.9712345)), row(1, scores(ssim=0.95004)), row(2, scores(clip_t=0.19996)),
            row(3, {"change": {"ssim": "n/a"}, "clip": {"clip_t": 0.3}}), row(4, {"clip": {"clip_t": 0.3}})]
    summary, kept, rejected = run(tmp_path, rows, min={"clip_t": 0.2}, max={"change.ssim": 0.95})
    because = {r["id"]: r["rejected_because"] for r in rejected}
    assert because == {0: ["change.ssim 0.971 > max 0.95"], 1: ["change.ssim 0.95004 > max 0.95"],
                       2: ["clip_t 0.19996 < min 0.2"], 3: ["change.ssim 'n/a' is not a number (max 0.95)"],
                       4: ["change.ssim missing (max 0.95)"]}
    assert summary.by_rule == {"change.ssim > max 0.95": 2, "clip_t < min 0.2": 1,
                               "change.ssim 'n/a' is not a number (max 0.95)": 1, "change.ssim missing (max 0.95)": 1}
    assert rule_of("change.ssim 0.971 > max 0.95") == "change.ssim > max 0.95"
