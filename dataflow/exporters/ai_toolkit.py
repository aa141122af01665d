"""The folder layout ai-toolkit (ostris) trains edit models from: ``targets/`` and ``control/``.

``targets/NAME.png`` is the edited image and ``targets/NAME.txt`` its caption (the instruction);
``control/NAME.png`` is the source, under the same name. Rows with several sources put the second in
``control_2/NAME.png``, the third in ``control_3/``, and so on (give ai-toolkit each folder as a control path).
NAME is the example's key. There are no shards: each file is written under a temp name and renamed. Files an
earlier export left in these folders under the names this writer gives (``00000012_0.png``, ``.txt``) are deleted
when the export starts; other files there are left alone.
"""

from __future__ import annotations

import os
import re

from dataflow.exporters.base import ExampleImages, ExportWriter, Layout
from dataflow.exporters.examples import Example
from dataflow.exporters.shards import TEMP_PREFIX, write_file
from dataflow.io.atomic import fsync_dir

TARGETS = "targets"
CONTROL = "control"
_OWN_NAME = re.compile(r"\d{8}_\d+\.(png|jpg|txt)|" + re.escape(TEMP_PREFIX) + r".*\.tmp")
_CONTROL_FOLDER = re.compile(rf"{CONTROL}(_\d+)?")


class AIToolkitWriter(ExportWriter):
    """Writes ``targets/`` (edited images and captions) and ``control/`` (sources) under ``out``."""

    name = "ai-toolkit"
    can_mark_rejected = False

    def __init__(self, out: str, layout: Layout, shard_size: int = 1000, image_format: str = "png"):
        super().__init__(out, layout, shard_size, image_format)
        self.folders = {TARGETS}
        os.makedirs(os.path.join(out, TARGETS), exist_ok=True)
        os.makedirs(os.path.join(out, CONTROL), exist_ok=True)
        for folder in os.listdir(out):
            if folder == TARGETS or _CONTROL_FOLDER.fullmatch(folder):
                self._clear(os.path.join(out, folder))

    @staticmethod
    def _clear(folder: str) -> None:
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if _OWN_NAME.fullmatch(name):
                    os.unlink(os.path.join(folder, name))

    def write(self, example: Example, images: ExampleImages) -> None:
        name = example.key
        for n, source in enumerate(images.sources):
            folder = CONTROL if n == 0 else f"{CONTROL}_{n + 1}"
            if folder not in self.folders:
                os.makedirs(os.path.join(self.out, folder), exist_ok=True)
                self.folders.add(folder)
            write_file(os.path.join(self.out, folder, f"{name}.{source.ext}"), source.data)
        write_file(os.path.join(self.out, TARGETS, f"{name}.{images.edited.ext}"), images.edited.data)
        write_file(os.path.join(self.out, TARGETS, f"{name}.txt"), example.instruction.encode("utf-8"))
        self.written += 1

    def close(self) -> list:
        folders = sorted(self.folders | {CONTROL})
        for folder in folders:
            fsync_dir(os.path.join(self.out, folder))
        return [os.path.join(self.out, folder) for folder in folders]
