"""The best-of-N loop from the command line, as docs/scoring.md shows it: run --candidates 3, score, select, export
--format hf with the preference split, loaded back with ``datasets``.

The classic backend is deterministic, so its three candidates of a row are identical. To give the ranking
something to rank, the test repaints each candidate as a generative backend's seeds would make them differ: the
source with a white block whose size depends on the candidate. The reward is then the real ``change`` metric's
``changed_fraction`` (the block's share of the picture), so the expected order is known.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from dataflow.cli.main import main
from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl

# per row id, each candidate's white block height (of 32 rows): a ranks 1, 2, 0; b ranks 0 and 1 (a tie, to the
# lower index; the tie is within the margin, so candidate 1 is rejected), then 2
BLOCK_ROWS = {"a": [8, 24, 16], "b": [12, 12, 4]}


def repaint(source: str, path: str, block: int) -> None:
    pixels = np.asarray(Image.open(source).convert("RGB")).copy()
    pixels[:block] = 255
    Image.fromarray(pixels).save(path)


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_candidates_score_select_export_give_sft_and_preference_splits(tmp_path, monkeypatch, capsys):
    datasets = pytest.importorskip("datasets")
    data = tmp_path / "data"
    data.mkdir()
    for i, rid in enumerate(BLOCK_ROWS):
        write_image(data / f"{rid}.png", 40, 32, seed=i)
    rows = [edit_row(f"{rid}.png", "Make it brighter.", id=rid) for rid in BLOCK_ROWS]
    rows.append(edit_row("a.png", "Change the vase to red.", id="vase"))  # the classic backend cannot: fails
    jsonl = write_jsonl(data / "in.jsonl", rows)
    monkeypatch.chdir(tmp_path)

    assert main(["run", jsonl, "--backend", "classic", "--candidates", "3", "--out", "out"]) == 1  # vase failed
    edited = read_jsonl(last_line(capsys))
    assert [(r["id"], r["candidates"], len(r["output_image"])) for r in edited] == [("a", 3, 3), ("b", 3, 3),
                                                                                     ("vase", 3, 0)]
    for row in edited[:2]:
        for path, block in zip(row["output_image"], BLOCK_ROWS[row["id"]]):
            repaint(str(data / f"{row['id']}.png"), path, block)

    assert main(["score", "out/edited_step1.jsonl", "--metrics", "change", "--no-gallery"]) == 0
    scored = last_line(capsys)
    assert main(["select", scored, "--best-by", "changed_fraction", "--min-margin", "0.1"]) == 0
    selected = last_line(capsys)
    assert selected == os.path.join("out", "selected_step1.jsonl")
    counts = json.loads(open("out/selected_step1_selection.json").read())
    assert (counts["candidates"], counts["sft"], counts["preference"], counts["rejected"]) == (6, 2, 3, 1)
    assert counts["sft"] + counts["preference"] + counts["rejected"] == counts["candidates"]
    gallery = open("out/selected_step1.gallery.html", encoding="utf-8").read()
    assert gallery.count("(chosen)") == 2 and "#3 · candidate" in gallery

    assert main(["export", selected, "--format", "hf", "--out", "ds",
                 "--preference", "out/selected_step1_preference.jsonl"]) == 0
    cache = str(tmp_path / "hf-cache")
    sft = datasets.load_dataset("ds", "sft", cache_dir=cache)["sft"]
    preference = datasets.load_dataset("ds", "preference", cache_dir=cache)["preference"]
    assert sft["id"] == ["a", "b"]  # one edit per surviving row
    by_id = {r["id"]: r for r in edited}
    raw = sft.cast_column("edited_image", datasets.Image(decode=False))
    best = {"a": 1, "b": 0}  # the largest block; b's 12-row tie goes to the lower index
    for example in raw:
        with open(by_id[example["id"]]["output_image"][best[example["id"]]], "rb") as handle:
            assert example["edited_image"]["bytes"] == handle.read()
    pairs = [(p["id"], p["chosen_index"], p["rejected_index"]) for p in preference]
    assert pairs == [("a", 1, 2), ("a", 1, 0), ("b", 0, 2)]  # per row, the worse side by falling reward
    assert all(p["chosen_score"] - p["rejected_score"] >= 0.1 for p in preference)
    assert preference[0]["chosen_score"] > preference[0]["rejected_score"] > preference[1]["rejected_score"]
    rejected = read_jsonl("out/selected_step1_rejected.jsonl")
    assert {(r["id"], tuple(r["rejected_because"])) for r in rejected} == {
        ("b", ("changed_fraction within 0.1 of the best",)), ("vase", ("no edited image",))}
