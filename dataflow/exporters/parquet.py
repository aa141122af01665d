"""Parquet shards that ``datasets`` loads with ``Image`` features: the ``hf`` layout and diffusers' ``ip2p`` one.

Shards are ``data/train-00000-of-00003.parquet``, as the Hub names them (``sft-`` and ``preference-`` for a
best-of-N export). Images are stored as the ``datasets``
image struct ``{"bytes", "path"}`` with the bytes embedded, and the schema's ``huggingface`` metadata (what
``datasets.Features.arrow_schema`` writes) declares them ``Image``, so
``datasets.load_dataset("parquet", data_dir=DIR)`` gives PIL images. Rows are written in row groups of at most
``ROW_GROUP_ROWS`` examples or ``ROW_GROUP_BYTES`` of images, so memory stays flat however large the export.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from dataflow.exporters.base import ExampleImages, ExportWriter, Layout
from dataflow.exporters.examples import EDIT_TYPE_KEY, Example
from dataflow.exporters.images import EncodedImage
from dataflow.exporters.shards import ShardSet

DATA_DIR = "data"
SPLIT = "train"
SHARD_PATTERN = rf"{SPLIT}-\d{{5}}-of-\d{{5}}\.parquet"
ROW_GROUP_ROWS = 100
ROW_GROUP_BYTES = 64 << 20


@dataclass
class Column:
    """One parquet column: its name, ``datasets`` dtype ("image", "string", "float64", "bool", "int64") and whether
    it is a list of them, and how an example gives its value."""

    name: str
    dtype: str
    get: Callable[[Example, ExampleImages], Any]
    is_list: bool = False

    def arrow_type(self):
        import pyarrow as pa

        one = {"image": pa.struct([("bytes", pa.binary()), ("path", pa.string())]), "string": pa.string(),
               "float64": pa.float64(), "bool": pa.bool_(), "int64": pa.int64()}[self.dtype]
        return pa.list_(one) if self.is_list else one

    def feature(self) -> Any:
        """The ``datasets`` feature as JSON (``Features.to_dict`` style; a list is the ``[feature]`` short form that
        datasets 2 to 5 all read)."""
        one = {"_type": "Image"} if self.dtype == "image" else {"dtype": self.dtype, "_type": "Value"}
        return [one] if self.is_list else one

    def yaml(self) -> dict:
        """The dataset card's ``dataset_info.features`` entry."""
        return {"name": self.name, "sequence" if self.is_list else "dtype": self.dtype}


def image_cell(image: Optional[EncodedImage]) -> Optional[dict]:
    return None if image is None else {"bytes": image.data, "path": image.name}


class ParquetWriter(ExportWriter):
    """Writes examples as parquet shards of ``shard_size`` examples, with the columns ``columns()`` names."""

    requires = (("pyarrow", "pyarrow"),)

    def __init__(self, out: str, layout: Layout, shard_size: int = 1000, image_format: str = "png",
                 split: str = SPLIT):
        super().__init__(out, layout, shard_size, image_format)
        self.check_dependencies()
        self.split = split
        self.spec = self.columns()
        self.shards = ShardSet(os.path.join(out, DATA_DIR), SHARD_PATTERN.replace(SPLIT, split, 1),
                               lambda i, n: f"{split}-{i:05d}-of-{n:05d}.parquet")
        self._writer = None
        self._in_shard = 0
        self._buffer: list[list] = [[] for _ in self.spec]
        self._buffered_bytes = 0

    def columns(self) -> list:
        raise NotImplementedError

    def schema(self):
        import pyarrow as pa

        features = {column.name: column.feature() for column in self.spec}
        return pa.schema([(column.name, column.arrow_type()) for column in self.spec]).with_metadata(
            {"huggingface": json.dumps({"info": {"features": features}})})

    def write(self, example: Example, images: ExampleImages) -> None:
        if self._writer is None:
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(self.shards.new_temp(), self.schema())
        for values, column in zip(self._buffer, self.spec):
            values.append(column.get(example, images))
        self._buffered_bytes += sum(len(image.data) for image in images.stored())
        self._in_shard += 1
        self.written += 1
        if len(self._buffer[0]) >= ROW_GROUP_ROWS or self._buffered_bytes >= ROW_GROUP_BYTES:
            self._flush()
        if self._in_shard >= self.shard_size:
            self._close_shard()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._buffer[0]:
            arrays = [pa.array(values, type=column.arrow_type()) for values, column in zip(self._buffer, self.spec)]
            self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema()))
        self._buffer = [[] for _ in self.spec]
        self._buffered_bytes = 0

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None
        self._in_shard = 0

    def close(self) -> list:
        if self.written == 0:  # an empty dataset is still a dataset: one shard with the schema and no rows
            import pyarrow.parquet as pq

            pq.write_table(self.schema().empty_table(), self.shards.new_temp())
        self._close_shard()
        return self.shards.finish()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.shards.abort()

    def card_config(self) -> Optional[dict]:
        return {"data_files": f"{DATA_DIR}/{self.split}-*", "split": self.split,
                "features": [column.yaml() for column in self.spec]}


class HFWriter(ParquetWriter):
    """The ``hf`` layout: ``id``, ``output_index``, ``instruction``, ``source_image`` (``source_images`` when a row
    has several), ``edited_image``, ``license`` (the editing model's, "unknown" when its card named none),
    ``edit_type`` (when rows name one, as ``dataflow-edit instruct`` writes them), ``error`` (with
    ``--include-failed``), ``rejected`` and ``rejected_because`` (with ``--rejected``), then one
    column per score."""

    name = "hf"
    needs_edited_image = False
    keep_source_bytes = True

    def columns(self) -> list:
        layout = self.layout
        spec = [Column("id", "string", lambda e, i: e.id),
                Column("output_index", "int64", lambda e, i: e.output_index),
                Column("instruction", "string", lambda e, i: e.instruction),
                Column("source_image", "image", lambda e, i: image_cell(i.sources[0]))]
        if layout.multi:
            spec.append(Column("source_images", "image", lambda e, i: [image_cell(s) for s in i.sources], True))
        spec.append(Column("edited_image", "image", lambda e, i: image_cell(i.edited)))
        spec.append(Column("license", "string", lambda e, i: e.license))
        if layout.edit_type:
            spec.append(Column("edit_type", "string", _edit_type))
        if layout.include_failed:
            spec.append(Column("error", "string", lambda e, i: e.error))
        spec += rejected_columns(layout)
        for name, dtype in layout.scores.columns:
            spec.append(Column(name, dtype, _score_getter(name)))
        return spec


class IP2PWriter(ParquetWriter):
    """diffusers' ``train_instruct_pix2pix.py`` columns: ``input_image``, ``edit_prompt``, ``edited_image`` (its
    defaults for ``--original_image_column``, ``--edit_prompt_column``, ``--edited_image_column``); with
    ``--rejected`` also ``rejected`` and ``rejected_because``. A multi-image row gives its first source only."""

    name = "ip2p"
    keep_source_bytes = True

    def columns(self) -> list:
        return [Column("input_image", "image", lambda e, i: image_cell(i.sources[0])),
                Column("edit_prompt", "string", lambda e, i: e.instruction),
                Column("edited_image", "image", lambda e, i: image_cell(i.edited)),
                *rejected_columns(self.layout)]


def rejected_columns(layout: Layout) -> list:
    if not layout.with_rejected:
        return []
    return [Column("rejected", "bool", lambda e, i: e.rejected),
            Column("rejected_because", "string", lambda e, i: list(e.rejected_because), True)]


def _edit_type(example: Example, images: Any) -> Optional[str]:
    value = example.fields.get(EDIT_TYPE_KEY)
    return value if isinstance(value, str) else None


def _score_getter(name: str) -> Callable:
    return lambda example, images: example.scores.get(name)
