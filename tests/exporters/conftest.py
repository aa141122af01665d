"""A small finished run, as the CLI leaves it: sources, edited PNGs, output, scored and filtered files, manifest."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest

from dataflow.operators.core_vision import ImageEditFilter
from dataflow.utils.storage import FileStorage
from tests.conftest import edit_row, write_image, write_jsonl

FINGERPRINT = {"serving": "flux-kontext", "model": "black-forest-labs/FLUX.1-Kontext-dev", "steps": 28,
               "guidance_scale": 2.5, "num_images_per_prompt": 2, "area": 1048576, "seed": 7,
               "max_sequence_length": 512}


def scores(clip_t: float, judge_sc: int = 8) -> dict:
    return {"change": {"changed_fraction": 0.5, "ssim": 0.8, "no_change": False},
            "clip": {"clip_t": clip_t, "clip_i": 0.9}, "dino": {"dino": 0.8},
            "judge": {"sc": judge_sc, "pq": 7, "overall": (judge_sc * 7) ** 0.5, "reason": "looks right"}}


@dataclass
class Run:
    root: str
    data: str
    out: str
    output: str  # edited_step1.jsonl
    scored: str
    filtered: str
    rejected: str
    sources: dict  # name -> path
    edited: dict  # (row id, k) -> absolute path
    instructions: dict  # row id -> instruction


@pytest.fixture
def run(tmp_path) -> Run:
    """Rows: r0 (PNG source, one edit), r1 (JPEG source, two edits; the second fails clip_t >= 0.2 with 0.1), r2 (two
    sources), r3 (failed: no output, an error). Edited paths are relative to the run's working directory."""
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    sources = {"a.png": write_image(data / "a.png", 40, 30, seed=1), "b.jpg": write_image(data / "b.jpg", 32, 48, 2),
               "c.png": write_image(data / "c.png", 24, 24, seed=3)}
    plan = [("r0", "a.png", "Make the sky pink.", 1), ("r1", "b.jpg", "Turn it into a pencil sketch.", 2),
            ("r2", ["a.png", "c.png"], "Put the cat from the second picture on the sofa.", 1),
            ("r3", "c.png", "Remove the tree.", 0)]
    write_jsonl(data / "in.jsonl", [edit_row(image, text, id=rid) for rid, image, text, _ in plan])
    rows, scored_rows, edited = [], [], {}
    for index, (rid, image, text, n) in enumerate(plan):
        paths = []
        for k in range(n):
            relative = os.path.join("out", f"sample_{index}", f"sample_{index}_{k}.png")
            os.makedirs(tmp_path / "out" / f"sample_{index}", exist_ok=True)
            edited[(rid, k)] = write_image(tmp_path / relative, 20 + k, 16, seed=10 * index + k)
            paths.append(relative)
        row = edit_row(image, text, id=rid, output_image=paths)
        if n == 0:
            row["output_image_error"] = "the model refused the prompt"
        rows.append(row)
        scored_rows.append(dict(row, scores=[scores(0.3 if k == 0 else 0.1, judge_sc=8 - k) for k in range(n)]))
    output = write_jsonl(out / "edited_step1.jsonl", rows)
    with open(out / "edited_step1.progress.jsonl", "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"fingerprint": FINGERPRINT}) + "\n")
    with open(out / "run.json", "w", encoding="utf-8") as handle:
        json.dump({"input": str(data / "in.jsonl"), "cwd": str(tmp_path), "backend": "flux-kontext",
                   "image_key": "images", "conversation_key": "conversations", "output_key": "output_image"}, handle)
    scored = write_jsonl(out / "scored_step1.jsonl", scored_rows)
    with open(out / "scored_step1.progress.jsonl", "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"fingerprint": {"serving": "scores", "metrics": [{"metric": "clip"}]}}) + "\n")
    summary = ImageEditFilter(min={"clip_t": 0.2}).run(
        FileStorage(scored, cache_path=str(out), file_name_prefix="filtered").step())
    return Run(root=str(tmp_path), data=str(data), out=str(out), output=output, scored=scored,
               filtered=summary.output_path, rejected=summary.rejected_path, sources=sources, edited=edited,
               instructions={rid: text for rid, _, text, _ in plan})


def file_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()
