"""Kill and interrupt real runs of the pipeline script, then check that reruns finish every row exactly once."""

import glob
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl

pytestmark = [pytest.mark.slow]
pytest.importorskip("diffusers")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "dataflow", "statics", "pipelines", "gpu_pipelines", "image_editing_pipeline.py")
SAVE_INTERVAL, BATCH = 5, 2
SIZES = [(48, 32), (32, 32), (32, 48)]


def make_input(tmp_path, n):
    rows = []
    for i in range(n):
        w, h = SIZES[i % 3]
        rows.append(edit_row(os.path.basename(write_image(tmp_path / f"in{i}.png", w, h, seed=i)), f"edit {i}",
                             id=f"row-{i}"))
    return write_jsonl(tmp_path / "in.jsonl", rows)


def start(jsonl, model, cwd):
    args = [sys.executable, SCRIPT, "--first_entry_file_name", jsonl, "--hf_model_name_or_path", model,
            "--diffuser_num_inference_steps", "2", "--diffuser_image_height", "32", "--diffuser_image_width", "32",
            "--batch_size", str(BATCH), "--save_interval", str(SAVE_INTERVAL)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def checkpointed(cwd) -> set:
    path = os.path.join(cwd, "cache_local", "image_edit_local", "dataflow_cache_step_step1.progress.jsonl")
    if not os.path.exists(path):
        return set()
    keys = set()
    for line in open(path).read().splitlines()[1:]:
        if line.endswith("}"):
            keys.add(line.split('"key": "')[1].split('"')[0])
    return keys


def rows_with_images(cwd) -> set:
    return set(glob.glob(os.path.join(cwd, "cache_local", "image_edit_local", "sample_*", "*.png")))


def wait_for(condition, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_kill_9_at_random_points_then_rerun_gives_every_row_exactly_once(tmp_path, tiny_model_dir):
    n = 60
    jsonl = make_input(tmp_path, n)
    work = tmp_path / "work"
    work.mkdir()
    rng = random.Random(1234)
    for attempt in range(3):
        before = len(checkpointed(work))
        started_ns = time.time_ns()
        proc = start(jsonl, tiny_model_dir, work)
        target = before + rng.randint(1, 12)
        wait_for(lambda: len(checkpointed(work)) >= target or proc.poll() is not None)
        time.sleep(rng.uniform(0, 0.15))
        proc.kill()
        proc.wait()
        saved = checkpointed(work)
        done = len(saved)
        # Rows this attempt edited (image written since it started) but did not checkpoint: what the kill cost.
        # Images left by earlier attempts' lost rows are not counted again; those rows belong to their own kill.
        written = {int(os.path.basename(os.path.dirname(p)).split("_")[1]) for p in rows_with_images(work)
                   if os.stat(p).st_mtime_ns >= started_ns}
        lost = {i for i in written if f"id:row-{i}" not in saved}
        assert len(lost) <= SAVE_INTERVAL + BATCH, f"kill {attempt}: {len(lost)} rows lost"
        assert done < n, "the run finished before it could be killed; the test needs more rows"
    proc = start(jsonl, tiny_model_dir, work)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    out = read_jsonl(work / stdout.strip().splitlines()[-1])
    assert [r["id"] for r in out] == [f"row-{i}" for i in range(n)]
    paths = [r["output_image"][0] for r in out]
    assert len(set(paths)) == n and all(len(r["output_image"]) == 1 for r in out)
    assert not glob.glob(str(work / "**" / "*.tmp"), recursive=True)

    # Each row holds its own image: the same pixels as an uninterrupted run.
    clean = tmp_path / "clean"
    clean.mkdir()
    proc = start(jsonl, tiny_model_dir, clean)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    reference = read_jsonl(clean / stdout.strip().splitlines()[-1])
    for row, ref in zip(out, reference):
        a = np.asarray(Image.open(work / row["output_image"][0]), dtype=np.int16)
        b = np.asarray(Image.open(clean / ref["output_image"][0]), dtype=np.int16)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1, row["id"]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_after_the_batch_with_a_resume_hint_and_the_rerun_resumes(tmp_path, tiny_model_dir, sig,
                                                                                  code):
    jsonl = make_input(tmp_path, 40)
    work = tmp_path / "work"
    work.mkdir()
    proc = start(jsonl, tiny_model_dir, work)
    assert wait_for(lambda: len(rows_with_images(work)) >= 3)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Run the same command again to resume" in stderr and "Traceback" not in stderr
    saved = checkpointed(work)
    assert 3 <= len(saved) < 40
    assert len(rows_with_images(work)) == len(saved)  # the batch in flight finished and was checkpointed
    proc = start(jsonl, tiny_model_dir, work)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert f"{len(saved)} reused" in stderr
    assert len(read_jsonl(work / stdout.strip().splitlines()[-1])) == 40
