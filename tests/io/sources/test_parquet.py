"""Parquet shards as ``datasets`` writes them: rows stream by row group, images come back by reference."""

import os

import numpy as np
import pytest

from dataflow.core.errors import InputError, RowError
from dataflow.core.reference import parse_reference
from dataflow.core.rows import image_paths, row_key
from dataflow.io import ImageIO
from dataflow.io.sources import open_dataset, read_source_bytes
from dataflow.utils.storage import RowStream
from tests.io.sources.builders import (
    decoded,
    image_dataset,
    samples,
    write_parquet_shards,
)

datasets = pytest.importorskip("datasets")
pq = pytest.importorskip("pyarrow.parquet")


def test_a_folder_of_shards_streams_every_row_with_references_that_read_back_the_embedded_bytes(tmp_path):
    shards = write_parquet_shards(tmp_path / "data", 10, shards=2, rows_per_group=2)
    assert pq.ParquetFile(shards[0]).metadata.num_row_groups == 3  # rows of later groups are found too
    stream = RowStream(str(tmp_path / "data"))
    rows = list(stream)
    assert stream.count() == 10 and len(rows) == 10
    assert [r["instruction"] for r in rows] == [s["instruction"] for s in samples(10)]
    first = parse_reference(rows[0]["image"])
    assert first.container == "train-00000-of-00002.parquet" and first.row == 0  # relative to the folder input
    assert parse_reference(rows[7]["image"]).row == 2  # the second shard counts its own rows
    io = ImageIO()
    for row, sample in zip(rows, samples(10)):
        [path] = image_paths(row, "image", str(tmp_path / "data"))  # resolved against the input folder
        assert read_source_bytes(path) == sample["bytes"]
        assert np.array_equal(np.asarray(io.read(path)), decoded(sample["bytes"]))


def test_a_list_of_images_a_file_kept_by_path_and_other_columns_come_through(tmp_path):
    picture = tmp_path / "kept.png"
    picture.write_bytes(samples(3)[2]["bytes"])
    two = samples(2)
    dataset = image_dataset(2, more=(datasets.Sequence(datasets.Image()),
                                     [[{"bytes": two[1]["bytes"], "path": None}, {"bytes": None, "path": str(picture)}],
                                      []]),
                            score=(datasets.Value("float32"), [0.5, None]),
                            tags=(datasets.Sequence(datasets.Value("string")), [["a", "b"], []]))
    dataset.to_parquet(str(tmp_path / "one.parquet"))
    rows = list(RowStream(str(tmp_path / "one.parquet")))
    assert rows[0]["score"] == 0.5 and rows[1]["score"] is None and rows[0]["tags"] == ["a", "b"]
    more = image_paths(rows[0], "more", str(tmp_path))
    assert read_source_bytes(more[0]) == two[1]["bytes"] and parse_reference(more[0]).item == 0
    assert more[1] == str(picture)


def test_binary_nested_in_another_column_does_not_stop_the_output_from_being_written(tmp_path):
    import pyarrow as pa

    from dataflow.utils.storage import dumps_row

    pq.write_table(pa.table({"image": [{"bytes": samples(1)[0]["bytes"], "path": None}],
                             "meta": [{"thumb": b"\x89PNG...", "note": "x"}]}), str(tmp_path / "t.parquet"))
    [row] = list(RowStream(str(tmp_path / "t.parquet")))
    assert parse_reference(row["image"]) is not None
    assert row["meta"] == {"thumb": "<binary: 7 bytes, not copied>", "note": "x"}
    assert "not copied" in dumps_row(row)


def test_identity_follows_the_image_content_not_its_place_in_the_shards(tmp_path):
    write_parquet_shards(tmp_path / "a", 6, shards=1)
    write_parquet_shards(tmp_path / "b", 6, shards=3)  # the same rows, resharded
    keys_a = [row_key(r, "image", "instruction") for r in RowStream(str(tmp_path / "a"))]
    keys_b = [row_key(r, "image", "instruction") for r in RowStream(str(tmp_path / "b"))]
    assert keys_a == keys_b and len(set(keys_a)) == 6


def test_a_shard_rewritten_since_the_reference_was_made_is_a_row_error_not_another_image(tmp_path):
    [shard] = write_parquet_shards(tmp_path / "d", 4, shards=1)
    path = image_paths(next(iter(RowStream(str(tmp_path / "d")))), "image", str(tmp_path / "d"))[0]
    image_dataset(5).select([1, 0, 2, 3, 4]).to_parquet(shard)  # row 0 now holds another picture
    with pytest.raises(RowError, match="changed since"):
        ImageIO().read(path)
    with pytest.raises(RowError, match="no row 9"):
        read_source_bytes(path.replace("row=0", "row=9"))
    with pytest.raises(RowError, match="no column 'picture'"):
        read_source_bytes(path.replace("column=image", "column=picture"))
    os.remove(shard)
    with pytest.raises(RowError, match="cannot open its shard"):
        ImageIO().probe(path)


def test_inputs_that_are_not_datasets_say_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="without parquet shards"):
        RowStream(str(tmp_path / "empty"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="bad.parquet: not a readable parquet file"):
        list(RowStream(str(tmp_path / "bad.parquet")))
    with pytest.raises(InputError, match="shard not found"):
        open_dataset(str(tmp_path / "missing.parquet"))
