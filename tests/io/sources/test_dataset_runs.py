"""Datasets as input, end to end: a parquet folder, a save_to_disk folder and a WebDataset brace pattern each run
through the CLI (classic backend), rerun, export again; on the tiny Kontext model a run is killed and resumed."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image, ImageOps

from dataflow.cli.main import main
from dataflow.engines import LocalEngine, MultiProcessEngine
from dataflow.operators.core_vision import PromptedImageEditGenerator
from dataflow.utils.storage import FileStorage
from tests.conftest import read_jsonl
from tests.engines.fakes import InvertServing
from tests.io.sources.builders import decoded, image_dataset, samples, write_parquet_shards, write_webdataset

datasets = pytest.importorskip("datasets")
webdataset = pytest.importorskip("webdataset")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CLI = os.path.join(os.path.dirname(sys.executable), "dataflow-edit")
CLASSIC = {"flip horizontally": ImageOps.mirror, "flip vertically": ImageOps.flip,
           "make it grayscale": lambda im: ImageOps.grayscale(im).convert("RGB"),
           "rotate 90 degrees": lambda im: im.rotate(90, expand=True)}


def make_input(kind: str, root, n: int) -> tuple[str, list]:
    """(the input argument, the CLI's field flags) of ``n`` samples stored as ``kind``."""
    if kind == "parquet":
        write_parquet_shards(root / "shards", n, shards=2, rows_per_group=2)
        return str(root / "shards"), ["--image-key", "image", "--conversation-key", "instruction"]
    if kind == "save_to_disk":
        image_dataset(n).save_to_disk(str(root / "disk"), num_shards=2)
        return str(root / "disk"), ["--image-key", "image", "--conversation-key", "instruction"]
    shards = write_webdataset(root / "wds", n, per_shard=3)
    return str(root / "wds" / f"edit-{{000000..{len(shards) - 1:06d}}}.tar"), ["--image-key", "jpg",
                                                                           "--conversation-key", "txt"]


def run_cli(args, capsys) -> tuple[int, str]:
    code = main(["run", *args, "--backend", "classic", "--batch-size", "2"])
    return code, capsys.readouterr()


@pytest.mark.parametrize("kind", ["parquet", "save_to_disk", "webdataset"])
def test_a_dataset_input_runs_reruns_and_exports_with_the_sources_bytes(kind, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    n = 7
    source, keys = make_input(kind, tmp_path, n)
    code, captured = run_cli([source, *keys, "--out", "out"], capsys)
    assert code == 0, captured.err
    output = captured.out.strip().splitlines()[-1]
    rows = read_jsonl(output)
    image_key = keys[1]
    assert len(rows) == n
    for row, sample in zip(rows, samples(n)):
        assert "#" in row[image_key] and len(row[image_key]) < 200  # a reference, never the bytes
        expected = CLASSIC[sample["instruction"]](Image.open(io.BytesIO(sample["bytes"])).convert("RGB"))
        assert np.array_equal(np.asarray(Image.open(row["output_image"][0])), np.asarray(expected))
    if kind == "webdataset":
        assert [r["__key__"] for r in rows] == [f"sample{i:06d}" for i in range(n)]
        assert rows[2]["json"] == {"source": "test", "index": 2}

    stamps = {r["output_image"][0]: os.stat(r["output_image"][0]).st_mtime_ns for r in rows}
    code, captured = run_cli([source, *keys, "--out", "out"], capsys)
    assert code == 0 and f"0 edited, {n} skipped (done earlier)" in captured.err
    assert read_jsonl(output) == rows and stamps == {p: os.stat(p).st_mtime_ns for p in stamps}
    assert os.path.isfile("out/edited_step1.gallery.html")
    assert len(os.listdir("out/gallery_files/edited_step1")) == 2 * n

    assert main(["export", output, "--format", "hf", "--out", "hf"]) == 0
    exported = datasets.load_dataset("parquet", data_dir="hf", cache_dir=str(tmp_path / "cache"))["train"]
    raw = exported.cast_column("source_image", datasets.Image(decode=False))
    assert len(exported) == n
    for example, stored, row, sample in zip(exported, raw, rows, samples(n)):
        assert stored["source_image"]["bytes"] == sample["bytes"]  # the embedded file, byte for byte
        assert np.array_equal(np.asarray(example["edited_image"]), np.asarray(Image.open(row["output_image"][0])))
        assert example["instruction"] == sample["instruction"]


def test_every_local_engine_reads_dataset_rows(tmp_path):
    write_parquet_shards(tmp_path / "shards", 6, shards=2, rows_per_group=2)
    for name, engine in [("local", LocalEngine()), ("two", MultiProcessEngine(devices=["cpu", "cpu"]))]:
        storage = FileStorage(str(tmp_path / "shards"), cache_path=str(tmp_path / name))
        summary = PromptedImageEditGenerator(InvertServing(batch_size=2), engine=engine).run(
            storage.step(), input_image_key="image", input_conversation_key="instruction", show_progress=False)
        assert (summary.generated, summary.failed) == (6, 0)
        for row, sample in zip(read_jsonl(summary.output_path), samples(6)):
            assert np.array_equal(np.asarray(Image.open(row["output_image"][0])), 255 - decoded(sample["bytes"]))


# -- the tiny Kontext model, killed and resumed ----------------------------------------------------------------
def start(source, keys, model, cwd):
    args = [CLI, "run", source, *keys, "--model", model, "--steps", "2",
            "--height", "32", "--width", "32", "--batch-size", "1", "--save-interval", "1", "--out", "out",
            "--no-gallery"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def checkpointed(cwd) -> int:
    path = os.path.join(cwd, "out", "edited_step1.progress.jsonl")
    if not os.path.exists(path):
        return 0
    return sum(1 for line in open(path).read().splitlines()[1:] if line.endswith("}"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["parquet", "save_to_disk", "webdataset"])
def test_kontext_on_a_dataset_input_resumes_after_kill_9_and_exports_again(kind, tmp_path, tiny_model_dir):
    n = 8
    source, keys = make_input(kind, tmp_path, n)
    work = tmp_path / "work"
    work.mkdir()
    proc = start(source, keys, tiny_model_dir, work)
    deadline = time.monotonic() + 240
    while checkpointed(work) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = checkpointed(work)
    assert 3 <= done < n, "the run must be killed part way"

    proc = start(source, keys, tiny_model_dir, work)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert f"{n - done} edited, {done} skipped (done earlier)" in stderr
    rows = read_jsonl(work / stdout.strip().splitlines()[-1])
    paths = [r["output_image"][0] for r in rows]
    assert len(rows) == n and len(set(paths)) == n and all(len(r["output_image"]) == 1 for r in rows)
    for path, sample in zip(paths, samples(n)):
        height, width = decoded(sample["bytes"]).shape[:2]
        out_width, out_height = Image.open(work / path).size
        assert (out_width > out_height) == (width > height)  # the output's shape follows its own source

    out = work / "wds-export"
    assert subprocess.run([CLI, "export", "out/edited_step1.jsonl", "--format",
                           "webdataset", "--out", str(out)], cwd=work, env=dict(os.environ, PYTHONPATH=REPO),
                          capture_output=True).returncode == 0
    shards = sorted(str(p) for p in out.glob("*.tar"))
    read_back = list(webdataset.WebDataset(shards, shardshuffle=False))
    assert len(read_back) == n
    for example, path, sample in zip(read_back, paths, samples(n)):
        assert np.array_equal(decoded(example["source.png"]), decoded(sample["bytes"]))
        assert example["edited.png"] == open(work / path, "rb").read()
        assert example["txt"].decode() == sample["instruction"]
