"""One run at a time per output folder: a second run is refused naming the first; a killed run's lock is taken."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dataflow.core.errors import InputError
from dataflow.io.atomic import atomic_open
from dataflow.io.lock import LOCK_NAME, output_lock
from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A run of the documented pipeline into out/ whose serving is slow: it says when its first batch starts.
SLOW_RUN = """
import sys, time
sys.path.insert(0, sys.argv[1])
from dataflow.io import ImageIO
from dataflow.operators.core_vision import PromptedImageEditGenerator
from dataflow.utils.storage import FileStorage
from tests.engines.fakes import InvertServing

def slow(requests):
    open("first-batch", "a").close()
    time.sleep(float(sys.argv[2]))

serving = InvertServing(batch_size=1, image_io=ImageIO(save_path="out"), on_batch=slow)
storage = FileStorage("in.jsonl", cache_path="out")
print(PromptedImageEditGenerator(serving).run(storage.step(), show_progress=False).describe())
"""


def start_slow_run(folder, seconds_per_row):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, "-c", SLOW_RUN, REPO, str(seconds_per_row)], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path, process, seconds=60):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.exists(path), process.communicate()[1] if process.poll() is not None else "timed out"


def cli(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "dataflow.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def rows_input(tmp_path):
    write_image(tmp_path / "a.png", 16, 16)
    return write_jsonl(tmp_path / "in.jsonl", [edit_row("a.png", "Blur it.", id=i) for i in range(6)])


@pytest.mark.slow
def test_a_second_run_into_the_same_folder_is_refused_naming_the_first_and_the_first_completes(tmp_path,
                                                                                                rows_input):
    first = start_slow_run(tmp_path, 0.3)
    try:
        wait_for(tmp_path / "first-batch", first)
        manifest = tmp_path / "out" / "run.json"  # as a first run started from the CLI writes it
        manifest.write_text('{"input": "in.jsonl", "backend": "diffusers"}\n')
        second = cli("run", "in.jsonl", "--backend", "classic", "--out", "out", "--no-gallery", cwd=tmp_path)
    finally:
        out, err = first.communicate(timeout=120)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert manifest.read_text() == '{"input": "in.jsonl", "backend": "diffusers"}\n'  # the refused run wrote none
    (line,) = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert f"is in use by another run (pid {first.pid} on " in line
    assert first.returncode == 0, err
    assert "6 generated" in out
    rows = read_jsonl(tmp_path / "out" / "dataflow_cache_step_step1.jsonl")
    assert [r["id"] for r in rows] == list(range(6)) and all(len(r["output_image"]) == 1 for r in rows)
    progress = read_jsonl(tmp_path / "out" / "dataflow_cache_step_step1.progress.jsonl")[1:]
    assert sorted(r["index"] for r in progress) == list(range(6))  # every row edited once, by the first run


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, rows_input):
    first = start_slow_run(tmp_path, 30)
    try:
        wait_for(tmp_path / "first-batch", first)
        with pytest.raises(InputError, match=rf"in use by another run \(pid {first.pid} on "):
            with output_lock(str(tmp_path / "out")):
                pass
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    with output_lock(str(tmp_path / "out")):
        holder = json.loads((tmp_path / "out" / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid()
        with output_lock(str(tmp_path / "out")):  # the same process may take it again (the step-file write does)
            pass
    assert (tmp_path / "out" / LOCK_NAME).read_text() == ""  # released: no holder to name


def test_only_the_lock_holder_removes_temp_files_left_in_its_folder(tmp_path):
    in_flight = tmp_path / ".step.jsonl.0123abcd.tmp"  # as another process's write in progress looks
    in_flight.write_text("half")
    with atomic_open(str(tmp_path / "step.jsonl")) as handle:
        handle.write("x")
    assert in_flight.exists()
    with output_lock(str(tmp_path)):
        with atomic_open(str(tmp_path / "step.jsonl")) as handle:
            handle.write("y")
    assert not in_flight.exists() and (tmp_path / "step.jsonl").read_text() == "y"


def another_process_could_lock(folder) -> bool:
    """Whether a second process could take ``folder``'s lock right now (as a second run would try)."""
    probe = ("import fcntl, os, sys\n"
             "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(1)\n")
    return subprocess.run([sys.executable, "-c", probe, str(folder / LOCK_NAME)], timeout=60).returncode == 0


def test_no_second_run_can_start_between_the_edits_and_the_step_file(tmp_path, rows_input, monkeypatch):
    """The Python API's run holds its folder from the first edit to the step file's last line: a second run that
    started in between would redo the rows whose step file is not written yet."""
    from dataflow.io import ImageIO
    from dataflow.operators.core_vision import PromptedImageEditGenerator
    from dataflow.utils.storage import FileStorage
    from tests.engines.fakes import InvertServing

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    while_writing = []
    write = FileStorage.write

    def write_after_probing(self, rows):
        while_writing.append(another_process_could_lock(out))
        return write(self, rows)

    monkeypatch.setattr(FileStorage, "write", write_after_probing)
    serving = InvertServing(batch_size=2, image_io=ImageIO(save_path="out"))
    summary = PromptedImageEditGenerator(serving).run(FileStorage("in.jsonl", cache_path="out").step(),
                                                      show_progress=False)
    assert summary.generated == 6 and while_writing == [False]
    assert another_process_could_lock(out)  # and released once the run is done
