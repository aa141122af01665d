"""The driver alone: how soon the first batch starts and how many rows a second it plans and records.

    python benchmarks/bench_driver.py                         # 100k and 1M rows, each in a fresh process
    python benchmarks/bench_driver.py --rows 200000 --out benchmarks/results/driver-my-machine.json
    python benchmarks/bench_driver.py --input parquet --rows 100000   # or webdataset: datasets as input

A JSONL of N rows references 1,000 tiny local PNGs of 8 sizes (so rows fall into 8 buckets); with ``--input
parquet`` the same rows are parquet shards of 10,000 rows (row groups of 100, as ``datasets`` writes image
datasets) with the PNGs embedded, with ``--input webdataset`` tar shards of 1,000 samples (a PNG and a .txt
each); the rows are read through ``dataflow.io.sources`` (each embedded image hashed for its identity, its
header probed through its reference). The run goes through
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


PARQUET_SHARD, PARQUET_GROUP, TAR_SHARD = 10_000, 100, 1_000


def make_input(folder: str, rows: int, kind: str = "jsonl") -> str:
    """``rows`` rows over ``IMAGES`` small PNGs, as a JSONL or a dataset; returns the input's path."""
    for i in range(IMAGES):
        Image.new("RGB", SIZES[i % len(SIZES)], (i % 256, 0, 0)).save(os.path.join(folder, f"img{i}.png"))
    if kind == "parquet":
        return make_parquet(folder, rows)
    if kind == "webdataset":
        return make_webdataset(folder, rows)
    path = os.path.join(folder, "in.jsonl")
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(rows):
            row = {"id": f"row-{i}", "images": f"img{i % IMAGES}.png",
                   "conversations": [{"role": "user", "content": f"Make sample {i} brighter."}]}
            handle.write(json.dumps(row) + "\n")
    return path


def png_bytes(folder: str) -> list[bytes]:
    """The bytes of the ``IMAGES`` PNGs ``make_input`` wrote, to embed in dataset shards."""
    images = []
    for i in range(IMAGES):
        with open(os.path.join(folder, f"img{i}.png"), "rb") as handle:
            images.append(handle.read())
    return images


def make_parquet(folder: str, rows: int) -> str:
    """Parquet shards of ``PARQUET_SHARD`` rows: an embedded-image struct column and a text column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = png_bytes(folder)
    shards = os.path.join(folder, "shards")
    os.makedirs(shards)
    for start in range(0, rows, PARQUET_SHARD):
        stop = min(rows, start + PARQUET_SHARD)
        table = pa.table({"id": [f"row-{i}" for i in range(start, stop)],
                          "image": [{"bytes": images[i % IMAGES], "path": None} for i in range(start, stop)],
                          "instruction": [f"Make sample {i} brighter." for i in range(start, stop)]})
        pq.write_table(table, os.path.join(shards, f"train-{start // PARQUET_SHARD:05d}.parquet"),
                       row_group_size=PARQUET_GROUP)
    return shards


def make_webdataset(folder: str, rows: int) -> str:
    """Uncompressed tar shards of ``TAR_SHARD`` samples: ``{key}.png`` and ``{key}.txt``."""
    import io
    import tarfile

    images = png_bytes(folder)
    shards = os.path.join(folder, "wds")
    os.makedirs(shards)
    count = (rows + TAR_SHARD - 1) // TAR_SHARD
    for shard in range(count):
        with tarfile.open(os.path.join(shards, f"edit-{shard:06d}.tar"), "w") as tar:
            for i in range(shard * TAR_SHARD, min(rows, (shard + 1) * TAR_SHARD)):
                for name, data in ((f"{i:09d}.png", images[i % IMAGES]),
                                   (f"{i:09d}.txt", f"Make sample {i} brighter.".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return os.path.join(shards, f"edit-{{000000..{count - 1:06d}}}.tar")


KEYS = {"jsonl": {}, "parquet": {"input_image_key": "image", "input_conversation_key": "instruction"},
        "webdataset": {"input_image_key": "png", "input_conversation_key": "txt"}}


def input_size(path: str) -> int:
    from dataflow.io.sources import open_dataset

    dataset = open_dataset(path)
    return sum(os.path.getsize(f) for f in dataset.files) if dataset else os.path.getsize(path)


def measure(rows: int, kind: str = "jsonl") -> dict:
    """One run over ``rows`` rows in this process; its timings and peak RSS."""
    from dataflow.operators.core_vision import PromptedImageEditGenerator
    from dataflow.utils.storage import FileStorage

    with tempfile.TemporaryDirectory(prefix="bench-driver-") as folder:
        source = make_input(folder, rows, kind)
        input_bytes = input_size(source)
        started = time.perf_counter()
        serving = NoOpServing(started)
        serving.image_io = DriverOnlyImageIO(save_path=os.path.join(folder, "out"))
        storage = FileStorage(source, cache_path=os.path.join(folder, "out"))
        summary = PromptedImageEditGenerator(serving, save_interval=100).run(storage.step(), show_progress=False,
                                                                           **KEYS[kind])
        seconds = time.perf_counter() - started
        output_lines = sum(1 for _ in open(summary.output_path, "rb"))
    return {
        "input": kind,
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated row counts, each run alone")
    parser.add_argument("--input", choices=sorted(KEYS), default="jsonl", help="what the rows are stored as")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # the child process's size
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.input)))
        return 0
    runs = []
    for rows in (int(r) for r in args.rows.split(",")):
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", str(rows), "--input", args.input],
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
