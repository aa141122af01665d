"""Pillow's warnings about a file belong to that file's row: collected per call, never printed."""

import logging
import os
import subprocess
import sys
import threading
import warnings

import pytest
from PIL import Image

from dataflow.io import ImageIO
from dataflow.logger import get_logger
from tests.conftest import write_image
from tests.io.corpus import tiff_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
METADATA_WARNING = "UserWarning: Metadata Warning, tag 284 had too many entries: 2, expected 1"


def warning_tiff(path) -> str:
    """A TIFF that decodes, with a tag that has two values where one is expected: Pillow warns and goes on."""
    path.write_bytes(tiff_file(24, 16, extra_tags=((284, 3, 2, 1),)))
    return str(path)


def pillow_warnings(recorded) -> list[str]:
    return [str(w.message) for w in recorded if "PIL" in w.filename]


def test_a_files_warnings_are_collected_once_per_call_and_not_shown(tmp_path, recwarn):
    path = warning_tiff(tmp_path / "w.tif")
    collected = []
    io = ImageIO()
    assert io.probe(path, warnings=collected) == (24, 16)
    assert io.read(path, warnings=collected).size == (24, 16)
    io.read(path, warnings=collected)  # the same warning from the same line again is seen again
    assert collected == [f"{path}: {METADATA_WARNING}"] * 3
    assert pillow_warnings(recwarn) == []


def test_a_list_of_paths_collects_the_warnings_of_each(tmp_path):
    first, second = warning_tiff(tmp_path / "a.tif"), warning_tiff(tmp_path / "b.tif")
    clean = write_image(tmp_path / "c.png", 8, 8)
    collected = []
    images = ImageIO().read([first, clean, second], warnings=collected)
    assert [image.size for image in images] == [(24, 16), (8, 8), (24, 16)]
    assert collected == [f"{first}: {METADATA_WARNING}", f"{second}: {METADATA_WARNING}"]


def test_a_decompression_bomb_warning_is_the_rows_and_the_image_still_decodes(tmp_path, monkeypatch, recwarn):
    path = write_image(tmp_path / "big.png", 100, 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # 10,000 px: over the limit, under twice the limit
    collected = []
    assert ImageIO().read(path, warnings=collected).size == (100, 100)
    assert len(collected) == 1 and collected[0].startswith(f"{path}: DecompressionBombWarning: Image size (10000")
    assert pillow_warnings(recwarn) == []


def test_without_a_list_warnings_are_logged_at_debug_level_only(tmp_path, recwarn):
    path = warning_tiff(tmp_path / "w.tif")
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = get_logger()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        ImageIO().read(path)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [(r.levelno, r.getMessage()) for r in records] == [(logging.DEBUG, f"{path}: {METADATA_WARNING}")]
    assert pillow_warnings(recwarn) == []


def test_pillow_warnings_outside_read_and_probe_still_reach_the_application(tmp_path, recwarn):
    path = warning_tiff(tmp_path / "w.tif")
    ImageIO().read(path)  # installs the routing
    with Image.open(path) as img:
        img.load()
    assert pillow_warnings(recwarn) == [METADATA_WARNING.split(": ", 1)[1]]


def test_threads_reading_at_once_each_get_exactly_their_own_files_warnings(tmp_path, recwarn):
    paths = [warning_tiff(tmp_path / f"w{i}.tif") for i in range(8)]
    collected = {path: [] for path in paths}
    start = threading.Barrier(len(paths))

    def read_many(path):
        start.wait()
        for _ in range(25):
            ImageIO().probe(path, warnings=collected[path])
            ImageIO().read(path, warnings=collected[path])

    threads = [threading.Thread(target=read_many, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert collected == {path: [f"{path}: {METADATA_WARNING}"] * 50 for path in paths}
    assert pillow_warnings(recwarn) == []


@pytest.mark.parametrize("action", ["error", "ignore", "default"])
def test_the_applications_warning_filters_apply_outside_read_and_not_to_a_rows_warnings(tmp_path, action):
    path = warning_tiff(tmp_path / "w.tif")
    ImageIO().read(path)  # the routing is in place before the application's filter is added
    with warnings.catch_warnings():
        warnings.simplefilter(action)
        collected = []
        ImageIO().read(path, warnings=collected)
        ImageIO().read(path, warnings=collected)
        assert collected == [f"{path}: {METADATA_WARNING}"] * 2
        if action == "error":
            with pytest.raises(UserWarning, match="Metadata Warning"), Image.open(path) as img:
                img.load()


def test_a_plain_python_process_prints_no_warning_to_stderr(tmp_path):
    path = warning_tiff(tmp_path / "w.tif")
    script = ("import sys; from dataflow.io import ImageIO; found = []; "
              "ImageIO().read(sys.argv[1], warnings=found); ImageIO().probe(sys.argv[1]); print(found)")
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.strip() == str([f"{path}: {METADATA_WARNING}"])
