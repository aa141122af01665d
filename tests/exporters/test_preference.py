"""A best-of-N export: the select step's SFT file as the ``sft`` split and its pairs as the ``preference`` split,
read back with ``datasets`` (through the card and as plain parquet) and with ``webdataset``."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from dataflow.core.errors import InputError
from dataflow.exporters import export
from dataflow.operators.core_vision import ImageEditSelector
from dataflow.utils.storage import FileStorage
from tests.conftest import edit_row, write_jsonl

REDS = {"r0": [100, 250, 30], "r1": [60, 200, 195]}  # the fake reward of each candidate


def file_bytes(path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


@pytest.fixture
def selected(tmp_path):
    """A scored --candidates 3 run (the reward: each candidate's red value), then select with a margin of 20."""
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    rows = []
    for i, (rid, reds) in enumerate(REDS.items()):
        Image.new("RGB", (12, 10), (0, 0, 90 + i)).save(data / f"{rid}.png")
        paths = []
        for k, red in enumerate(reds):
            relative = f"out/sample_{i}/sample_{i}_{k}.png"
            (tmp_path / relative).parent.mkdir(exist_ok=True)
            Image.new("RGB", (12, 10), (red, k, 0)).save(tmp_path / relative)
            paths.append(relative)
        rows.append(edit_row(f"{rid}.png", f"make {rid} red", id=rid, output_image=paths, candidates=3,
                             scores=[{"reward": {"overall": float(red)}} for red in reds]))
    write_jsonl(data / "in.jsonl", [edit_row(f"{rid}.png", f"make {rid} red", id=rid) for rid in REDS])
    with open(out / "run.json", "w", encoding="utf-8") as handle:
        json.dump({"input": str(data / "in.jsonl"), "cwd": str(tmp_path), "backend": "classic"}, handle)
    with open(out / "edited_step1.progress.jsonl", "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"fingerprint": {"serving": "classic", "version": 2, "candidates": 3}}) + "\n")
    scored = write_jsonl(out / "scored_step1.jsonl", rows)
    summary = ImageEditSelector("reward", min_margin=20).run(
        FileStorage(scored, cache_path=str(out), file_name_prefix="selected").step())
    return tmp_path, summary


def test_hf_sft_and_preference_splits_load_with_datasets_and_hold_the_pngs(selected):
    datasets = pytest.importorskip("datasets")
    root, selection = selected
    out = root / "dataset"
    summary = export(selection.output_path, "hf", str(out), preference=selection.preference_path)
    assert (summary.written, summary.preference_written, summary.problems) == (2, 3, 0)
    cache = str(root / "hf-cache")
    sft = datasets.load_dataset(str(out), "sft", cache_dir=cache)["sft"]  # through the card's configs
    preference = datasets.load_dataset(str(out), "preference", cache_dir=cache)["preference"]
    assert sft["id"] == ["r0", "r1"] and len(preference) == 3
    assert isinstance(preference.features["chosen"], datasets.Image)
    assert isinstance(preference.features["rejected"], datasets.Image)
    assert [(p["id"], p["chosen_score"], p["rejected_score"], p["metric"]) for p in preference] == [
        ("r0", 250.0, 100.0, "reward"), ("r0", 250.0, 30.0, "reward"), ("r1", 200.0, 60.0, "reward")]
    raw = preference.cast_column("chosen", datasets.Image(decode=False)).cast_column(
        "rejected", datasets.Image(decode=False)).cast_column("source_image", datasets.Image(decode=False))
    for pair in raw:
        row = 0 if pair["id"] == "r0" else 1
        assert pair["chosen"]["bytes"] == file_bytes(root / f"out/sample_{row}/sample_{row}_{pair['chosen_index']}.png")
        assert pair["rejected"]["bytes"] == file_bytes(
            root / f"out/sample_{row}/sample_{row}_{pair['rejected_index']}.png")
        assert pair["source_image"]["bytes"] == file_bytes(root / f"data/{pair['id']}.png")
        assert pair["instruction"] == f"make {pair['id']} red"
    assert preference[0]["chosen"].getpixel((0, 0)) == (250, 1, 0)  # decoded: the best candidate of r0
    plain = datasets.load_dataset("parquet", data_files={"preference": str(out / "data" / "preference-*.parquet")},
                                  cache_dir=cache)["preference"]
    assert plain["rejected_index"] == [0, 2, 0]
    card = (out / "README.md").read_text()
    assert "Each row was edited 3 times" in card and "ranked by `reward`" in card
    assert "| 6 | 2 | 3 | 1 |" in card  # candidates, SFT, pairs, rejected


def test_webdataset_gets_sft_and_preference_shard_sets(selected):
    wds = pytest.importorskip("webdataset")
    root, selection = selected
    out = root / "wds"
    summary = export(selection.output_path, "webdataset", str(out), preference=selection.preference_path)
    assert [p.rsplit("/", 1)[1] for p in summary.shards] == ["sft-000000.tar"]
    assert [p.rsplit("/", 1)[1] for p in summary.preference_shards] == ["preference-000000.tar"]
    pairs = list(wds.WebDataset([f"file:{p}" for p in summary.preference_shards], shardshuffle=False))
    assert len(pairs) == 3
    first = pairs[0]
    assert first["chosen.png"] == file_bytes(root / "out/sample_0/sample_0_1.png")
    assert first["rejected.png"] == file_bytes(root / "out/sample_0/sample_0_0.png")
    record = json.loads(first["json"])
    assert (record["chosen_score"], record["rejected_score"], record["metric"]) == (250.0, 100.0, "reward")
    assert first["txt"].decode() == "make r0 red"
    sft = list(wds.WebDataset([f"file:{p}" for p in summary.shards], shardshuffle=False))
    assert [s["edited.png"] for s in sft] == [file_bytes(root / "out/sample_0/sample_0_1.png"),
                                               file_bytes(root / "out/sample_1/sample_1_1.png")]


def test_formats_without_a_place_for_pairs_refuse_them(selected):
    root, selection = selected
    with pytest.raises(InputError, match="--format ip2p has no place for preference pairs"):
        export(selection.output_path, "ip2p", str(root / "x"), preference=selection.preference_path)
