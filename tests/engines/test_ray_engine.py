"""The Ray engine on a local two-CPU Ray: same rows as the local engine, resume, and actors that die."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError
from dataflow.engines import LocalEngine
from dataflow.engines.job import EditJob
from dataflow.engines.tasks import RowTask
from dataflow.io import ImageIO
from dataflow.io.lock import LOCK_NAME
from dataflow.operators.core_vision import PromptedImageEditGenerator
from dataflow.utils.storage import FileStorage
from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl
from tests.engines.fakes import DyingServing, InvertServing

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),  # Ray copying its own context
]
ray = pytest.importorskip("ray")

from dataflow.engines.ray_engine import RayEngine, import_ray  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module; its files stay in a short temp folder (socket paths are length-limited)."""
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, _temp_dir=temp_dir, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": REPO}})  # workers import the test servings from tests/
    yield
    ray.shutdown()
    if previous is None:
        os.environ.pop("RAY_AUTH_MODE")
    else:
        os.environ["RAY_AUTH_MODE"] = previous
    shutil.rmtree(temp_dir, ignore_errors=True)


class DieInSecondBatch:
    """An ``on_batch`` hook: the first worker to reach its second batch kills its process, once per flag file."""

    def __init__(self, flag: str):
        self.flag = flag
        self.batches = 0

    def __call__(self, requests):
        self.batches += 1
        if self.batches == 2:
            try:
                os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
            os._exit(1)


class SlowDown:
    """An ``on_batch`` hook that makes each batch take ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, requests):
        time.sleep(self.seconds)


SIGTERM_SCRIPT = """
import pathlib, sys
from dataflow.core.errors import RunInterrupted
from dataflow.engines.ray_engine import RayEngine
from tests.engines.fakes import InvertServing
from tests.engines.test_ray_engine import SlowDown, invert_job

job = invert_job(pathlib.Path(sys.argv[1]), 30, InvertServing(batch_size=1, on_batch=SlowDown(0.3)))
job.save_interval = 1
engine = RayEngine(ray_init_kwargs={"num_cpus": 2, "_temp_dir": sys.argv[2], "include_dashboard": False})
try:
    engine.run(job, show_progress=False)
except RunInterrupted as exc:
    print(exc, file=sys.stderr)
    sys.exit(exc.exit_code)
"""

# A run that starts its own Ray and stops after two records, with Ray Data's block prefetcher thread (so named in
# ray 2.60) running late, as on a busy machine; the driver waits a little after the run for such stragglers.
EARLY_STOP_SCRIPT = """
import pathlib, sys, threading, time
import ray
from dataflow.engines.ray_engine import RayEngine
from dataflow.engines.tasks import RowTask
from tests.engines.fakes import InvertServing
from tests.engines.test_ray_engine import SlowDown, invert_job

wait = ray.wait
def late_wait(*args, **kwargs):
    if threading.current_thread().name == "Prefetcher":
        time.sleep(1)
    return wait(*args, **kwargs)
ray.wait = late_wait
job = invert_job(pathlib.Path(sys.argv[1]), 10, InvertServing(batch_size=1, on_batch=SlowDown(0.3)))
batches = [[RowTask(i, f"k{i}", [row["images"]], "x")] for i, row in enumerate(job.rows)]
records = []
engine = RayEngine(num_workers=2, ray_init_kwargs={"num_cpus": 2, "_temp_dir": sys.argv[2], "include_dashboard": False})
engine._execute(job, batches, records.append, lambda: len(records) >= 2)
time.sleep(3)
print("records", len(records), file=sys.stderr)
"""


def start_script(script: str, tmp_path) -> tuple[subprocess.Popen, str]:
    """``script`` in a fresh Python that starts its own Ray (files in a short temp folder, removed by the caller)."""
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), temp_dir], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, temp_dir


def run_generator(input_file, serving, cache, engine):
    storage = FileStorage(input_file, cache_path=cache)
    summary = PromptedImageEditGenerator(serving, save_interval=3, engine=engine).run(storage.step(),
                                                                                     show_progress=False)
    return summary, read_jsonl(summary.output_path)


def invert_job(tmp_path, n, serving):
    rows = [edit_row(write_image(tmp_path / f"in{i}.png", 16 + i, 16, seed=i), f"edit {i}") for i in range(n)]
    return EditJob(rows=rows, serving=serving, image_io=ImageIO(str(tmp_path / "out")), base_dir=str(tmp_path),
                   progress_file=str(tmp_path / "progress.jsonl"))


def assert_every_row_once_and_inverted(rows, save_path):
    paths = [p for row in rows for p in row["output_image"]]
    assert all(len(row["output_image"]) == 1 for row in rows) and len(set(paths)) == len(rows)
    on_disk = [os.path.join(folder, name) for folder, _, names in os.walk(save_path) for name in names
               if name != LOCK_NAME]  # the run's lock file on the folder stays (dataflow.io.lock)
    assert sorted(on_disk) == sorted(paths)  # no duplicates, no temp files
    for row, path in zip(rows, paths):
        source = np.asarray(Image.open(row["images"]).convert("RGB"))
        assert np.array_equal(np.asarray(Image.open(path)), 255 - source)


def test_mixed_sizes_give_the_local_engines_rows_and_a_rerun_reuses_them(tmp_path, tiny_model_dir, mixed_images,
                                                                         monkeypatch):
    from dataflow.serving.diffusers.kontext_serving import FluxKontextServing

    # Relative paths everywhere (input, cache, model): the actors were started in another folder.
    monkeypatch.chdir(tmp_path)
    names = ["wide", "square", "tall"]
    rows = [edit_row(os.path.basename(mixed_images[names[i % 3]]), f"make it {i}", id=i) for i in range(8)]
    write_jsonl("in.jsonl", rows)
    model = os.path.relpath(tiny_model_dir)

    def serving():
        return FluxKontextServing(model, batch_size=2, num_inference_steps=2, height=32, width=32,
                                  max_sequence_length=32)

    summary, out = run_generator("in.jsonl", serving(), "cache_ray", RayEngine())
    assert (summary.generated, summary.failed) == (8, 0)
    _, local = run_generator("in.jsonl", serving(), "cache_local", LocalEngine())
    for row, ref in zip(out, local):
        (path,) = row["output_image"]
        assert path == ref["output_image"][0].replace("cache_local", "cache_ray") and not os.path.isabs(path)
        w, h = Image.open(row["images"]).size
        a = np.asarray(Image.open(path), dtype=np.int16)
        b = np.asarray(Image.open(ref["output_image"][0]), dtype=np.int16)
        assert a.shape == b.shape and abs(a.shape[1] / a.shape[0] - w / h) < 0.15 * w / h
        assert np.abs(a - b).max() <= 1, row["id"]

    stamps = {p: os.stat(p).st_mtime_ns for row in out for p in row["output_image"]}
    again, rerun = run_generator("in.jsonl", serving(), "cache_ray", RayEngine())
    assert (again.generated, again.reused) == (0, 8) and rerun == out
    assert stamps == {p: os.stat(p).st_mtime_ns for p in stamps}


def test_rows_of_a_dataset_input_travel_to_the_actors_as_references(tmp_path):
    from tests.io.sources.builders import (
        decoded,
        samples,
        write_parquet_shards,
        write_webdataset,
    )

    pytest.importorskip("datasets")
    pytest.importorskip("webdataset")
    write_parquet_shards(tmp_path / "shards", 5, shards=2, rows_per_group=2)
    write_webdataset(tmp_path / "wds", 5, per_shard=2)
    for source, keys in [(tmp_path / "shards", ("image", "instruction")),
                         (tmp_path / "wds" / "edit-{000000..000002}.tar", ("jpg", "txt"))]:
        storage = FileStorage(str(source), cache_path=str(tmp_path / "out" / source.name))
        summary = PromptedImageEditGenerator(InvertServing(batch_size=2), engine=RayEngine(num_workers=2)).run(
            storage.step(), input_image_key=keys[0], input_conversation_key=keys[1], show_progress=False)
        assert (summary.generated, summary.failed) == (5, 0)
        for row, sample in zip(read_jsonl(summary.output_path), samples(5)):
            assert np.array_equal(np.asarray(Image.open(row["output_image"][0])), 255 - decoded(sample["bytes"]))


def test_actor_deaths_lose_no_row_and_a_batch_that_kills_every_actor_fails_after_max_attempts(tmp_path):
    flag = str(tmp_path / "died")
    serving = DyingServing(poison="edit 5", batch_size=1, on_batch=DieInSecondBatch(flag))
    job = invert_job(tmp_path, 8, serving)
    rows, summary = RayEngine(num_workers=2, max_attempts=2).run(job, show_progress=False)
    assert os.path.exists(flag), "no actor died in its second batch: the test did not test anything"
    assert (summary.generated, summary.failed) == (7, 1)
    assert "died 2 times" in rows[5]["output_image_error"]
    assert_every_row_once_and_inverted(rows[:5] + rows[6:], job.image_io.save_path)
    assert len(read_jsonl(job.progress_file)) == 1 + 8  # the fingerprint line, then each row once


def test_a_stop_request_ends_the_run_after_the_next_record(tmp_path):
    job = invert_job(tmp_path, 6, InvertServing(batch_size=1))
    batches = [[RowTask(i, f"k{i}", [row["images"]], "x")] for i, row in enumerate(job.rows)]
    records = []
    RayEngine(num_workers=1)._execute(job, batches, records.append, lambda: True)
    assert len(records) == 1 and ray.is_initialized()  # Ray was started by the fixture, so it stays up


def test_sigterm_stops_a_run_that_started_its_own_ray_with_progress_saved(tmp_path):
    proc, temp_dir = start_script(SIGTERM_SCRIPT, tmp_path)
    progress = tmp_path / "progress.jsonl"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if progress.exists() and len(progress.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    shutil.rmtree(temp_dir, ignore_errors=True)
    assert proc.returncode == 128 + signal.SIGTERM, stderr  # the driver's graceful stop, not Ray's handler
    assert "SIGTERM received" in stderr and "Run the same command again to resume" in stderr
    assert 2 <= len(read_jsonl(progress)) - 1 < 30


def test_a_run_stopped_early_leaves_nothing_that_calls_ray_after_its_shutdown(tmp_path):
    """A Ray call after ``ray.shutdown`` is an error, or kills the driver before it reports the saved progress (seen
    once in a full test run: exit code 1 instead of 143 after SIGTERM)."""
    proc, temp_dir = start_script(EARLY_STOP_SCRIPT, tmp_path)
    _, stderr = proc.communicate(timeout=120)
    shutil.rmtree(temp_dir, ignore_errors=True)
    assert proc.returncode == 0 and "records 2" in stderr, stderr
    assert "Error in prefetcher thread" not in stderr and "core worker has already been shutdown" not in stderr


def test_options_are_checked_and_a_missing_ray_is_explained(monkeypatch):
    with pytest.raises(InputError, match="num_workers"):
        RayEngine(num_workers=0)
    with pytest.raises(InputError, match="num_gpus_per_worker"):
        RayEngine(num_gpus_per_worker=-1)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match=r"pip install 'dataflow-edit\[ray\]'"):
        import_ray()
