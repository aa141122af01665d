"""One worker process per device, here two CPU workers: same results as one process, and no lost rows."""

import os

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError
from dataflow.engines import LocalEngine, MultiProcessEngine
from dataflow.engines.multiprocess import parse_devices, visible_gpus
from dataflow.io import ImageIO
from dataflow.operators.core_vision import PromptedImageEditGenerator
from dataflow.utils.storage import FileStorage
from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl
from tests.engines.fakes import DyingServing

SIZES = [(48, 32), (32, 32), (32, 48), (64, 32)]


def mixed_rows(tmp_path, n=8):
    return [edit_row(os.path.basename(write_image(tmp_path / f"i{i}.png", *SIZES[i % 4], seed=i)), f"edit {i}")
            for i in range(n)]


def run(tmp_path, rows, serving, engine, cache):
    serving.image_io = ImageIO(str(tmp_path / cache / "images"))
    storage = FileStorage(write_jsonl(tmp_path / "in.jsonl", rows), cache_path=str(tmp_path / cache))
    summary = PromptedImageEditGenerator(serving, save_interval=2, engine=engine).run(storage.step())
    return summary, read_jsonl(summary.output_path)


@pytest.mark.slow
def test_two_cpu_workers_match_one_process_and_a_rerun_redoes_nothing(tmp_path, tiny_model_dir):
    from dataflow.serving.diffusers.kontext_serving import FluxKontextServing

    def serving():
        return FluxKontextServing(tiny_model_dir, batch_size=2, num_inference_steps=2, height=32, width=32,
                                  max_sequence_length=32)

    rows = mixed_rows(tmp_path)
    engine = MultiProcessEngine(devices=["cpu", "cpu"])
    summary, out = run(tmp_path, rows, serving(), engine, "multi")
    assert (summary.generated, summary.failed) == (8, 0)
    _, reference = run(tmp_path, rows, serving(), LocalEngine(), "single")
    for row, ref, (w, h) in zip(out, reference, [SIZES[i % 4] for i in range(8)]):
        a = np.asarray(Image.open(row["output_image"][0]), dtype=np.int16)
        b = np.asarray(Image.open(ref["output_image"][0]), dtype=np.int16)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1
        assert a.shape[1] / a.shape[0] == pytest.approx(w / h, rel=0.1)
    stamps = {r["output_image"][0]: os.stat(r["output_image"][0]).st_mtime_ns for r in out}
    again, out2 = run(tmp_path, rows, serving(), engine, "multi")
    assert (again.generated, again.reused) == (0, 8) and out2 == out
    assert stamps == {p: os.stat(p).st_mtime_ns for p in stamps}


@pytest.mark.slow
def test_a_dead_workers_batch_is_redone_by_the_other_worker(tmp_path):
    rows = mixed_rows(tmp_path, 10)
    serving = DyingServing(die_once_flag=str(tmp_path / "died"), batch_size=2)
    summary, out = run(tmp_path, rows, serving, MultiProcessEngine(devices=["cpu", "cpu"]), "c")
    assert os.path.exists(tmp_path / "died")
    assert (summary.generated, summary.failed) == (10, 0)
    paths = [r["output_image"][0] for r in out]
    assert len(set(paths)) == 10 and all(Image.open(p).size for p in paths)


@pytest.mark.slow
def test_a_batch_that_kills_every_worker_fails_its_rows_and_the_rest_finish(tmp_path):
    rows = mixed_rows(tmp_path, 6) + [edit_row("i0.png", "poison")]
    serving = DyingServing(poison="poison", batch_size=1)
    summary, out = run(tmp_path, rows, serving, MultiProcessEngine(devices=["cpu", "cpu", "cpu"]), "c")
    assert (summary.generated, summary.failed) == (6, 1)
    assert "worker process on device cpu died" in out[-1]["output_image_error"]


def test_a_dead_workers_batch_is_edited_by_the_other_worker_fast(tmp_path):
    # The lightest form of the slow test above: two rows, one per batch, so each worker starts with one; the
    # first to edit dies and its row must still come back edited, with the right pixels.
    rows = mixed_rows(tmp_path, 2)
    serving = DyingServing(die_once_flag=str(tmp_path / "died"), batch_size=1)
    summary, out = run(tmp_path, rows, serving, MultiProcessEngine(devices=["cpu", "cpu"]), "c")
    assert os.path.exists(tmp_path / "died")
    assert (summary.generated, summary.failed) == (2, 0)
    for row in out:
        (path,) = row["output_image"]
        source = np.asarray(Image.open(tmp_path / row["images"]).convert("RGB"))
        assert np.array_equal(np.asarray(Image.open(path)), 255 - source)


def test_device_lists(monkeypatch):
    assert parse_devices("0, 1") == ["0", "1"] and parse_devices("cpu,cpu") == ["cpu", "cpu"]
    with pytest.raises(InputError, match="--devices"):
        parse_devices("gpu0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == ["2", "3"]
