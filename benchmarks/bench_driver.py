"""The driver alone: how soon the first batch starts and how many rows a second it plans and records.

    python benchmarks/bench_driver.py                         # 100k and 1M rows, each in a fresh process
    python benchmarks/bench_driver.py --rows 200000 --out benchmarks/results/driver-my-machine.json

A JSONL of N rows references 1,000 tiny local PNGs of 8 sizes (so rows fall into 8 buckets); the run goes through
the documented path (``FileStorage`` -> ``PromptedImageEditGenerator`` -> step file) on the local engine with a
serving that does nothing (it returns its input as the edit). Image headers are probed for real, but the worker
gets a stock image instead of decoding the file and output files are named without being written: decoding and
PNG encoding are the worker's part, which runs beside the model (one process per GPU). What is measured is the
driver: reading and keying rows, probing headers, bucketing, the checkpoint, the progress bar and the output
step file. Each size runs in its own process,
so its peak RSS (``ru_maxrss``) is its own. Prints one JSON object; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PIL import Image  # noqa: E402

from dataflow.core.request import EditResult  # noqa: E402
from dataflow.core.serving import ImageEditServing  # noqa: E402
from dataflow.io.image_io import ImageIO  # noqa: E402

IMAGES = 1000
SIZES = [(16 + 8 * (i % 4), 16 + 8 * (i // 4)) for i in range(8)]
BATCH_SIZE = 8


class NoOpServing(ImageEditServing):
    """Returns each row's decoded input as its edit, and notes when the first batch arrived."""

    batch_size = BATCH_SIZE

    def __init__(self, started: float):
        self.started = started
        self.first_edit_s = None

    def fingerprint(self) -> dict:
        return {"serving": "noop"}

    def bucket_key(self, width: int, height: int):
        return (width, height)

    def edit(self, requests):
        if self.first_edit_s is None:
            self.first_edit_s = time.perf_counter() - self.started
        return [EditResult(images=[r.image]) for r in requests]


class DriverOnlyImageIO(ImageIO):
    """Probes headers for real, but hands the worker a stock image instead of decoding the file, and names output
    files as usual without writing them: decoding and PNG encoding are the worker's work (one process per GPU
    does it beside the model), and the benchmark times the driver."""

    stock = Image.new("RGB", (8, 8))

    def read(self, path, warnings=None):
        return [self.stock for _ in path] if isinstance(path, (list, tuple)) else self.stock

    def write(self, sample_index, images, suffix=""):
        return [self.output_path(sample_index, k, suffix) for k in range(len(images))]


def make_input(folder: str, rows: int) -> str:
    """``rows`` JSONL rows over ``IMAGES`` small PNGs; returns the JSONL's path."""
    for i in range(IMAGES):
        Image.new("RGB", SIZES[i % len(SIZES)], (i % 256, 0, 0)).save(os.path.join(folder, f"img{i}.png"))
    path = os.path.join(folder, "in.jsonl")
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(rows):
            row = {"id": f"row-{i}", "images": f"img{i % IMAGES}.png",
                   "conversations": [{"role": "user", "content": f"Make sample {i} brighter."}]}
            handle.write(json.dumps(row) + "\n")
    return path


def measure(rows: int) -> dict:
    """One run over ``rows`` rows in this process; its timings and peak RSS."""
    from dataflow.operators.core_vision import PromptedImageEditGenerator
    from dataflow.utils.storage import FileStorage

    with tempfile.TemporaryDirectory(prefix="bench-driver-") as folder:
        jsonl = make_input(folder, rows)
        input_bytes = os.path.getsize(jsonl)
        started = time.perf_counter()
        serving = NoOpServing(started)
        serving.image_io = DriverOnlyImageIO(save_path=os.path.join(folder, "out"))
        storage = FileStorage(jsonl, cache_path=os.path.join(folder, "out"))
        summary = PromptedImageEditGenerator(serving, save_interval=100).run(storage.step(), show_progress=False)
        seconds = time.perf_counter() - started
        output_lines = sum(1 for _ in open(summary.output_path, "rb"))
    return {
        "rows": rows,
        "input_mib": round(input_bytes / 2**20, 1),
        "first_edit_s": round(serving.first_edit_s, 3),
        "total_s": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "generated": summary.generated,
        "failed": summary.failed,
        "output_rows": output_lines,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated row counts, each run alone")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # the child process's size
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one)))
        return 0
    runs = []
    for rows in (int(r) for r in args.rows.split(",")):
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", str(rows)],
                               capture_output=True, text=True, check=True)
        runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), file=sys.stderr)
    result = {"benchmark": "driver", "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "python": platform.python_version(), "runs": runs}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
