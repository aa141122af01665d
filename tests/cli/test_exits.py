"""Exits as users meet them: signals give 128 + N, Ctrl-C while the command loads prints no traceback, and a
gallery that cannot be written says that the step file is complete."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import edit_row, write_image, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO)

# The seed scripts' way of running: the documented pipeline inside run_main, with a slow serving that says when
# its first batch starts.
SLOW_RUN = """
import sys, time
from dataflow.cli.exits import run_main
from dataflow.io import ImageIO
from dataflow.operators.core_vision import PromptedImageEditGenerator
from dataflow.utils.storage import FileStorage
from tests.engines.fakes import InvertServing

def slow(requests):
    open("first-batch", "a").close()
    time.sleep(5)

serving = InvertServing(batch_size=1, image_io=ImageIO(save_path="out"), on_batch=slow)
storage = FileStorage("in.jsonl", cache_path="out")
sys.exit(run_main(lambda: PromptedImageEditGenerator(serving).run(storage.step()).exit_code))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_stops_at_once_with_that_signals_exit_code(tmp_path, sig):
    write_image(tmp_path / "a.png", 16, 16)
    write_jsonl(tmp_path / "in.jsonl", [edit_row("a.png", f"edit {i}") for i in range(4)])
    run = subprocess.Popen([sys.executable, "-c", SLOW_RUN], cwd=tmp_path, env=ENV, stderr=subprocess.PIPE,
                           text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "first-batch").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(sig)
    time.sleep(0.5)
    run.send_signal(sig)
    err = run.communicate(timeout=60)[1]
    assert run.returncode == 128 + sig, err
    assert "stopped at once" in err and "Traceback" not in err


# Sends this process SIGINT while ``dataflow.cli`` is still importing the command's modules.
INTERRUPTED_IMPORT = """
import importlib.abc, os, signal, sys

class InterruptOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "dataflow.cli.exits":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptOnImport())
from dataflow.cli import main
sys.exit(main(["run", "--help"]))
"""


def test_ctrl_c_while_the_command_loads_is_one_line_and_exit_130(tmp_path):
    result = subprocess.run([sys.executable, "-c", INTERRUPTED_IMPORT], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip() == "stopped before the run started; nothing was done"


def test_a_gallery_that_cannot_be_written_says_the_step_file_is_complete(tmp_path):
    write_image(tmp_path / "a.png", 16, 16)
    write_jsonl(tmp_path / "in.jsonl", [edit_row("a.png", "Flip it horizontally.")])
    (tmp_path / "out" / "edited_step1.gallery.html").mkdir(parents=True)  # where the page goes, something else is
    result = subprocess.run([sys.executable, "-m", "dataflow.cli.main", "run", "in.jsonl", "--backend", "classic",
                             "--out", "out"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stdout.strip().splitlines()[-1] == os.path.join("out", "edited_step1.jsonl")
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "only the gallery failed" in line and "gallery.html" in line
    assert "the step file out/edited_step1.jsonl is complete" in line
    assert len(open(tmp_path / "out" / "edited_step1.jsonl").read().splitlines()) == 1
