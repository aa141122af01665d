"""Broken input files, one of each kind: each is a ``RowError`` naming the file, never another exception."""

import json
import os
import threading

import numpy as np
import pytest
from PIL import Image, ImageOps

from dataflow.cli.main import main
from dataflow.core.errors import RowError
from dataflow.io import ImageIO
from tests.conftest import edit_row, read_jsonl, write_jsonl
from tests.io.corpus import build_corpus

# libtiff prints some decoding errors from C, straight to file descriptor 2, under the name Pillow gives it.
LIBTIFF_PREFIX = "tempfile.tif: "


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, str]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def outcome(call, path):
    """("ok", value), ("raised", exception) or ("blocked", None) if ``call(path)`` takes over 10 seconds."""
    result = []

    def target():
        try:
            result.append(("ok", call(path)))
        except BaseException as exc:  # the test reports any type, so nothing may escape the thread
            result.append(("raised", exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    return result[0] if result else ("blocked", None)


def test_every_corpus_file_decodes_or_is_a_row_error_naming_it(corpus, recwarn, capfd):
    problems = {}
    for name, path in corpus.items():
        for method in ("probe", "read"):
            kind, value = outcome(getattr(ImageIO(), method), path)
            if kind == "raised" and not (type(value) is RowError and path in str(value)):
                problems[f"{method} {name}"] = f"{type(value).__name__}: {value}"
            elif kind == "blocked" or (kind == "ok" and not name.startswith("good_") and method == "read"):
                problems[f"{method} {name}"] = kind
            elif name.startswith("good_") and kind != "ok":
                problems[f"{method} {name}"] = f"a good image failed: {value}"
    assert problems == {}
    assert [str(w.message) for w in recwarn if "PIL" in w.filename] == []
    printed = capfd.readouterr().err.splitlines()
    assert [line for line in printed if not line.startswith(LIBTIFF_PREFIX)] == []


@pytest.mark.parametrize("name, fragment", [
    ("empty.png", "is empty"),
    ("folder.png", "is a directory"),
    ("fifo.png", "is a FIFO (named pipe), not a regular file"),
    ("symlink_loop.png", "is a symlink loop"),
    ("dangling_symlink.png", "is a symlink to a missing file (nowhere.png)"),
    ("random_bytes.jpg", "not a readable image"),
    ("png_bad_ihdr_crc.png", "not a readable image"),
    ("truncated.png", "truncated"),
    ("truncated.jpg", "cannot decode image {path}: OSError: image file is truncated"),
    ("png_corrupt_idat.png", "cannot decode image {path}: OSError: broken data stream"),
    ("tiff_strip_beyond_end.tif", "truncated"),
    ("tiff_absurd_size.tif", "decompression bomb"),
    ("fits_without_image_data.fits", "cannot decode image {path}: ValueError: No image data"),
    ("dds_unsupported_dxgi.dds", "cannot decode image {path}: NotImplementedError: Unimplemented DXGI format 93"),
])
def test_each_kind_of_broken_file_says_what_is_wrong(corpus, name, fragment):
    path = corpus[name]
    with pytest.raises(RowError) as info:
        ImageIO().read(path)
    assert fragment.format(path=path) in str(info.value) and path in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_file_is_not_found(tmp_path):
    with pytest.raises(RowError, match="image file not found: .*nothing.png"):
        ImageIO().probe(str(tmp_path / "nothing.png"))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files without permission")
def test_a_file_without_read_permission_says_so(corpus, tmp_path):
    path = tmp_path / "locked.png"
    path.write_bytes(open(corpus["good_0.png"], "rb").read())
    path.chmod(0)
    with pytest.raises(RowError, match="permission denied"):
        ImageIO().read(str(path))


def test_ctrl_c_while_decoding_is_not_turned_into_a_row_error(corpus, monkeypatch):
    def interrupted(image, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ImageOps, "exif_transpose", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ImageIO().read(corpus["good_0.png"])


# -- end to end ------------------------------------------------------------------------------------------------
def grayscale_of(path: str) -> np.ndarray:
    return np.asarray(ImageOps.grayscale(ImageIO().read(path)).convert("RGB"))


def snapshot(rows) -> dict[str, tuple[int, bytes]]:
    return {p: (os.stat(p).st_mtime_ns, open(p, "rb").read()) for r in rows for p in r["output_image"]}


def test_a_run_over_the_corpus_edits_the_good_rows_and_explains_every_other(tmp_path, capsys):
    names = build_corpus(tmp_path).keys()
    rows = [edit_row(name, "Convert to grayscale.", id=name) for name in names]
    rows.append(edit_row("missing.png", "Convert to grayscale.", id="missing.png"))
    jsonl = write_jsonl(tmp_path / "in.jsonl", rows)
    command = ["run", jsonl, "--backend", "classic", "--out", str(tmp_path / "out")]

    assert main(command) == 1
    output = capsys.readouterr().out.strip().splitlines()[-1]
    first = read_jsonl(output)
    assert [r["id"] for r in first] == [r["id"] for r in rows]
    for row in first:
        if row["id"].startswith("good_"):
            (path,) = row["output_image"]
            assert np.array_equal(np.asarray(Image.open(path)), grayscale_of(str(tmp_path / row["id"])))
        else:
            assert row["output_image"] == [], row["id"]
            error = row["output_image_error"]
            assert row["id"] in error and "\n" not in error, error
    good = [r for r in first if r["id"].startswith("good_")]
    before = snapshot(good)

    assert main(command) == 1
    again = read_jsonl(capsys.readouterr().out.strip().splitlines()[-1])
    assert [json.dumps(r) for r in again if r["id"].startswith("good_")] == [json.dumps(r) for r in good]
    assert len(again) == len(rows) and snapshot(good) == before
