"""A write that is interrupted, by an exception or by SIGKILL, leaves the previous file whole."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from dataflow.io import ImageIO
from dataflow.io.atomic import atomic_open
from dataflow.io.lock import output_lock
from dataflow.utils.storage import write_records

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def leftovers(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


class FailingHalfway:
    """Wraps a file handle; its ``write`` puts half the bytes on disk and then fails, as on a full disk."""

    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return self.handle.__exit__(*exc_info)

    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_an_exception_inside_atomic_open_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("previous contents\n")
    with pytest.raises(RuntimeError, match="stopped midway"):
        with atomic_open(str(path)) as handle:
            handle.write("new contents, " * 10_000)
            handle.flush()
            raise RuntimeError("stopped midway")
    assert path.read_text() == "previous contents\n"
    assert leftovers(tmp_path) == []


def test_an_image_write_that_fails_midway_keeps_the_previous_png(tmp_path, monkeypatch):
    io = ImageIO(save_path=str(tmp_path / "out"))
    (path,) = io.write(0, [Image.new("RGB", (32, 16), (255, 0, 0))])
    before = open(path, "rb").read()
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *args, **kwargs: FailingHalfway(real_fdopen(*args, **kwargs)))
    noise = np.random.default_rng(0).integers(0, 256, (16, 32, 3), dtype=np.uint8)
    with pytest.raises(OSError, match="No space left"):
        io.write(0, [Image.fromarray(noise)])
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert Image.open(path).getpixel((0, 0)) == (255, 0, 0)
    assert leftovers(os.path.dirname(path)) == []


def test_a_step_file_whose_rows_fail_to_serialize_midway_keeps_the_previous_step_file(tmp_path):
    path = str(tmp_path / "step.jsonl")
    write_records(path, [{"id": "old"}], "jsonl")
    before = open(path, "rb").read()
    rows = [{"id": i, "text": "x" * 100} for i in range(500)] + [{"id": "bad", "value": object()}]
    with pytest.raises(TypeError):
        write_records(path, rows, "jsonl")
    assert open(path, "rb").read() == before
    assert leftovers(tmp_path) == []


WRITER = """
import os, sys, time
from dataflow.io.atomic import atomic_open
from dataflow.io.lock import output_lock

path, marker = sys.argv[1:]
with atomic_open(path, "wb") as handle:
    for _ in range(4):
        handle.write(b"n" * (1 << 20))
    handle.flush()
    open(marker, "w").close()  # half of the file is written: the parent kills us now
    time.sleep(60)
    for _ in range(4):
        handle.write(b"n" * (1 << 20))
"""


def test_a_writer_killed_midway_leaves_the_old_file_and_the_next_locked_write_removes_its_temp_file(tmp_path):
    path, marker = tmp_path / "big.bin", tmp_path / "half-written"
    path.write_bytes(b"previous contents")
    env = dict(os.environ, PYTHONPATH=REPO)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(marker)], env=env)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), "the writer never got halfway"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
    assert path.read_bytes() == b"previous contents"
    assert len(leftovers(tmp_path)) == 1  # the killed write's temp file, which nothing renamed
    with output_lock(str(tmp_path)), atomic_open(str(path), "wb") as handle:  # as a run writes its folder
        handle.write(b"new contents")
    assert path.read_bytes() == b"new contents"
    assert leftovers(tmp_path) == []


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_written_files_honour_the_umask(tmp_path, umask_022):
    (png,) = ImageIO(save_path=str(tmp_path / "out")).write(0, [Image.new("RGB", (8, 8))])
    step = str(tmp_path / "out" / "step.jsonl")
    write_records(step, [{"id": 1}], "jsonl")
    assert [oct(os.stat(p).st_mode & 0o777) for p in (png, step)] == ["0o644", "0o644"]
    os.umask(0o077)
    write_records(step, [{"id": 2}], "jsonl")
    assert oct(os.stat(step).st_mode & 0o777) == "0o600"


def test_a_full_disk_names_the_file_that_could_not_be_written(tmp_path, monkeypatch):
    from dataflow.utils.checkpoint import Checkpoint

    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *args, **kwargs: FailingHalfway(real_fdopen(*args, **kwargs)))
    with pytest.raises(OSError, match=r"No space left on device: '.*step\.jsonl'"):
        write_records(str(tmp_path / "step.jsonl"), [{"id": 1}], "jsonl")
    monkeypatch.undo()
    checkpoint = Checkpoint(str(tmp_path / "step.progress.jsonl"), {"serving": "x"}, interval=1)
    checkpoint._open()
    checkpoint._handle = FailingHalfway(checkpoint._handle)
    with pytest.raises(OSError, match=r"No space left on device: '.*step\.progress\.jsonl'"):
        checkpoint.add({"key": "a", "index": 0, "output": [], "error": None})
