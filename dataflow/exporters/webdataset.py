"""WebDataset tar shards: ``{prefix}-000000.tar`` of ``shard_size`` examples (1,000 by default, as X2Edit ships).

Each example is ``{key}.source.png``, ``{key}.edited.png``, ``{key}.txt`` (the instruction) and ``{key}.json``
(everything else: id, output index, the scores as the row holds them, the image files it came from, the rejection,
the row's other fields). Rows with several sources add ``{key}.source_1.png`` and so on. Images are stored in
``--image-format`` (``.jpg`` members with ``jpeg``); a source file in another format is re-encoded losslessly to
PNG so that every example has the same member names. Keys never hold a dot (WebDataset splits names at the first
one). The tars are written with the standard library; ``webdataset`` is needed only to read them.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from typing import Optional

from dataflow.exporters.base import ExampleImages, ExportWriter, Layout
from dataflow.exporters.examples import Example
from dataflow.exporters.shards import ShardSet

PREFIX = "train"


class WebDatasetWriter(ExportWriter):
    """Writes examples as tar shards named ``{prefix}-{index:06d}.tar``.

    Args:
        prefix: the shards' name before the index.
        mtime: the members' modification time (fixed, so the same export gives the same bytes).
    """

    name = "webdataset"

    def __init__(self, out: str, layout: Layout, shard_size: int = 1000, image_format: str = "png",
                 prefix: str = PREFIX, mtime: int = 0, split: Optional[str] = None):
        super().__init__(out, layout, shard_size, image_format)
        prefix = split or prefix  # a split's shard set: sft-000000.tar, preference-000000.tar
        self.prefix = prefix
        self.mtime = mtime
        self.shards = ShardSet(out, rf"{prefix}-\d{{6}}\.tar", lambda i, n: f"{prefix}-{i:06d}.tar")
        self._tar: Optional[tarfile.TarFile] = None
        self._in_shard = 0

    def write(self, example: Example, images: ExampleImages) -> None:
        self.write_members(example.key, images.sources, {"edited": images.edited}, example.instruction,
                           metadata(example))

    def write_members(self, key: str, sources: list, edits: dict, instruction: str, record: dict) -> None:
        """One example: its sources, its edited images by member name, its instruction and its json record."""
        if self._tar is None:
            self._tar = tarfile.open(self.shards.new_temp(), "w", format=tarfile.USTAR_FORMAT)
        for n, source in enumerate(sources):
            self._add(f"{key}.{'source' if n == 0 else f'source_{n}'}.{source.ext}", source.data)
        for member, image in edits.items():
            self._add(f"{key}.{member}.{image.ext}", image.data)
        self._add(f"{key}.txt", instruction.encode("utf-8"))
        self._add(f"{key}.json", json.dumps(record, ensure_ascii=False, default=str).encode("utf-8"))
        self.written += 1
        self._in_shard += 1
        if self._in_shard >= self.shard_size:
            self._close_shard()

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), self.mtime, 0o444
        self._tar.addfile(info, io.BytesIO(data))

    def _close_shard(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        self._in_shard = 0

    def close(self) -> list:
        self._close_shard()
        return self.shards.finish()

    def abort(self) -> None:
        self._close_shard()
        self.shards.abort()

    def card_config(self) -> Optional[dict]:
        return {"data_files": f"{self.prefix}-*.tar", "split": self.prefix if self.prefix != PREFIX else "train",
                "features": None}


def metadata(example: Example) -> dict:
    """What the ``.json`` member holds: every field of the example but the images and the instruction."""
    record = dict(example.fields)
    record.update(id=example.id, output_index=example.output_index, license=example.license, scores=example.score_entry,
                  source_files=[os.path.basename(p) for p in example.sources],
                  edited_file=os.path.basename(example.edited) if example.edited else None)
    if example.rejected or example.rejected_because:
        record.update(rejected=example.rejected, rejected_because=example.rejected_because)
    return record
