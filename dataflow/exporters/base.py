"""What every export writer shares: its options, the layout of the examples it receives, and the dependency check."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Optional

from dataflow.core.errors import InputError
from dataflow.exporters.examples import Example, ScoreColumns
from dataflow.exporters.images import EncodedImage


@dataclass
class Layout:
    """What the whole export holds, known from a first pass over the rows before anything is written.

    Args:
        scores: the score columns.
        multi: some row has more than one source image.
        include_failed: failed rows are exported (without an edited image).
        with_rejected: a filter step's rejected rows are exported too.
        edit_type: some row names its edit type (``edit_type``, as ``dataflow-edit instruct`` writes it).
    """

    scores: ScoreColumns = field(default_factory=ScoreColumns)
    multi: bool = False
    include_failed: bool = False
    with_rejected: bool = False
    edit_type: bool = False


@dataclass
class ExampleImages:
    """An example's images as they are stored: the sources in order, and the edited image (None: a failed row)."""

    sources: list
    edited: Optional[EncodedImage]

    def stored(self) -> list:
        """Every image this example stores."""
        return self.sources + ([self.edited] if self.edited else [])


class ExportWriter:
    """One export format: takes examples one at a time and writes them out as it goes.

    Args:
        out: the export folder.
        layout: what the export holds (see ``Layout``).
        shard_size: examples per shard.
        image_format: "png" or "jpeg": the format images are stored in (see ``dataflow.exporters.images``).
    """

    name = ""
    needs_edited_image = True  # failed rows cannot be exported in this format
    keep_source_bytes = False  # store source files' bytes in whatever format they are
    can_mark_rejected = True
    requires: tuple = ()  # (module, pip package) pairs

    def __init__(self, out: str, layout: Layout, shard_size: int = 1000, image_format: str = "png"):
        self.out = out
        self.layout = layout
        self.shard_size = shard_size
        self.image_format = image_format
        self.written = 0

    @classmethod
    def check_dependencies(cls) -> None:
        """``InputError`` saying what to install when a module this format needs is missing."""
        missing = [package for module, package in cls.requires if importlib.util.find_spec(module) is None]
        if missing:
            raise InputError(f"--format {cls.name} needs {', '.join(missing)}: pip install 'dataflow-edit[export]'")

    def write(self, example: Example, images: ExampleImages) -> None:
        raise NotImplementedError

    def close(self) -> list:
        """Finish the export; return the shards (or folders) written."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop what this export wrote under temp names; the earlier export stays."""

    def card_config(self) -> Optional[dict]:
        """For the dataset card: ``{"data_files": glob, "features": [yaml entries]}``, or None (no HF config)."""
        return None
