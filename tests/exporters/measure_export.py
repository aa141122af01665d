"""Export throughput and peak memory on synthetic runs (not a test; run it by hand).

    python -m tests.exporters.measure_export [ROWS ...]

Builds a run of ROWS rows (64x64 PNG sources and edits, one edit per row, scored), exports it in every format in a
fresh process each, and prints rows/s and the process's peak RSS, so growth with the row count shows.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

SCORES = {"change": {"changed_fraction": 0.5, "ssim": 0.8, "no_change": False}, "clip": {"clip_t": 0.3, "clip_i": 0.9},
          "dino": {"dino": 0.8}, "judge": {"sc": 8, "pq": 7, "overall": 7.48, "reason": "fine"}}


def build(root: str, rows: int) -> str:
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "src"), exist_ok=True)
    os.makedirs(os.path.join(root, "out", "images"), exist_ok=True)
    for name in ("src/a.png", "out/images/e.png"):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(os.path.join(root, name))
    with open(os.path.join(root, "src", "in.jsonl"), "w") as handle:
        handle.write("{}\n")
    path = os.path.join(root, "out", "scored_step1.jsonl")
    with open(path, "w") as handle:
        for i in range(rows):  # every row points at the same two files: the file cache is warm, as on a fast disk
            handle.write(json.dumps({"id": f"row-{i}", "images": "a.png",
                                     "conversations": [{"role": "user", "content": f"Edit number {i}."}],
                                     "output_image": ["out/images/e.png"], "scores": [SCORES]}) + "\n")
    with open(os.path.join(root, "out", "run.json"), "w") as handle:
        json.dump({"input": os.path.join(root, "src", "in.jsonl"), "cwd": root}, handle)
    return path


def one(path: str, fmt: str, out: str) -> None:
    from dataflow.exporters import export

    start = time.perf_counter()
    summary = export(path, fmt, out)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"format": fmt, "examples": summary.written, "seconds": round(seconds, 2),
                      "rows_per_s": round(summary.written / seconds), "peak_rss_mib": round(peak)}))


def main(sizes: list) -> None:
    for rows in sizes:
        with tempfile.TemporaryDirectory() as root:
            path = build(root, rows)
            for fmt in ("hf", "webdataset", "ip2p", "ai-toolkit"):
                subprocess.run([sys.executable, "-m", "tests.exporters.measure_export", "--one", path, fmt,
                                os.path.join(root, f"export-{fmt}")], check=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        one(*sys.argv[2:5])
    else:
        main([int(n) for n in sys.argv[1:]] or [2000, 8000])
