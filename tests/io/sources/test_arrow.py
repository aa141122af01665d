"""``datasets.save_to_disk`` folders as input."""

import pytest

from dataflow.core.errors import InputError
from dataflow.core.reference import parse_reference
from dataflow.core.rows import image_paths
from dataflow.io.sources import read_source_bytes
from dataflow.utils.storage import RowStream
from tests.io.sources.builders import image_dataset, samples

datasets = pytest.importorskip("datasets")


def test_a_save_to_disk_folder_reads_as_rows_whose_images_read_back(tmp_path):
    image_dataset(7).save_to_disk(str(tmp_path / "disk"), num_shards=2)
    stream = RowStream(str(tmp_path / "disk"))
    rows = list(stream)
    assert stream.fmt == "arrow" and stream.count() == 7
    assert [r["instruction"] for r in rows] == [s["instruction"] for s in samples(7)]
    assert parse_reference(rows[-1]["image"]).container.endswith("data-00001-of-00002.arrow")
    for row, sample in zip(rows, samples(7)):
        assert read_source_bytes(image_paths(row, "image", str(tmp_path / "disk"))[0]) == sample["bytes"]


def test_a_dataset_dict_folder_asks_for_one_split(tmp_path):
    datasets.DatasetDict({"train": image_dataset(2), "test": image_dataset(1)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match=r"DatasetDict with splits test, train; give one split's folder"):
        RowStream(str(tmp_path / "dd"))
