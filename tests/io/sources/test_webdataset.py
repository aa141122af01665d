"""WebDataset tars as input: samples grouped by key, text decoded, images referenced."""

import gzip
import os
import tarfile

import pytest

from dataflow.core.errors import InputError, RowError
from dataflow.core.rows import image_paths, instruction, row_key
from dataflow.io.sources import read_source_bytes
from dataflow.io.sources.webdataset import expand_braces, split_name
from dataflow.utils.storage import RowStream
from tests.io.sources.builders import samples, write_webdataset

pytest.importorskip("webdataset")


def test_brace_patterns_expand_like_webdataset_shard_lists():
    assert expand_braces("s-{000..003}.tar") == [f"s-{i:03d}.tar" for i in range(4)]
    assert expand_braces("{a,b}/x-{8..10}.tar") == ["a/x-8.tar", "a/x-9.tar", "a/x-10.tar", "b/x-8.tar",
                                                   "b/x-9.tar", "b/x-10.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    with pytest.raises(InputError, match="not a brace pattern"):
        expand_braces("s-{x}.tar")


def test_member_names_split_at_the_first_dot_of_the_base_name():
    assert split_name("a/b.c/000123.source.png") == ("a/b.c/000123", "source.png")
    assert split_name("k.txt") == ("k", "txt")


def test_a_brace_pattern_of_shards_reads_as_one_row_per_sample(tmp_path):
    write_webdataset(tmp_path / "wds", 10, per_shard=4)
    stream = RowStream(str(tmp_path / "wds" / "edit-{000000..000002}.tar"))
    rows = list(stream)
    assert stream.fmt == "webdataset" and stream.count() == 10 and len(rows) == 10
    assert rows[5]["__key__"] == "sample000005" and rows[5]["json"] == {"source": "test", "index": 5}
    assert instruction(rows[5], "txt") == samples(10)[5]["instruction"]  # a plain-text conversation
    assert row_key(rows[5], "jpg", "txt") == "id:sample000005"
    for row, sample in zip(rows, samples(10)):
        assert read_source_bytes(image_paths(row, "jpg", str(tmp_path / "wds"))[0]) == sample["bytes"]
    folder_rows = list(RowStream(str(tmp_path / "wds")))  # the folder of shards too, relative to itself
    assert [r["jpg"] for r in folder_rows] == [r["jpg"] for r in rows]


def test_bad_shards_are_named(tmp_path):
    write_webdataset(tmp_path, 2, per_shard=2)
    with pytest.raises(InputError, match=r"shard not found: .*edit-000001.tar"):
        RowStream(str(tmp_path / "edit-{000000..000001}.tar"))
    with open(tmp_path / "edit-000000.tar", "rb") as src, gzip.open(tmp_path / "z.tar", "wb") as dst:
        dst.write(src.read())
    with pytest.raises(InputError, match="not an uncompressed tar"):
        list(RowStream(str(tmp_path / "z.tar")))
    [row] = list(RowStream(str(tmp_path / "edit-000000.tar")))[:1]
    path = image_paths(row, "jpg", str(tmp_path))[0]
    with pytest.raises(RowError, match="no member 'sample000000.png'"):
        read_source_bytes(path.replace(".jpg", ".png"))
    with tarfile.open(tmp_path / "edit-000000.tar") as tar:
        info = tar.getmember("sample000000.jpg")
    with open(tmp_path / "edit-000000.tar", "r+b") as handle:
        handle.truncate(info.offset_data + 10)
    os.utime(tmp_path / "edit-000000.tar", ns=(1, 1))
    with pytest.raises(RowError, match="truncated"):
        read_source_bytes(path)
    with pytest.raises(InputError, match="edit-000000.tar: truncated or corrupt tar after member 'sample000000.jpg'"):
        list(RowStream(str(tmp_path / "edit-000000.tar")))
