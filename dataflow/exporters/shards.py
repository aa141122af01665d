"""Shards written under temp names and renamed when the export ends, replacing the shards of an earlier export.

Each shard is written as a hidden ``.export-*.tmp`` file beside its final place. ``finish`` fsyncs them, deletes
the earlier export's shards that this one does not rewrite (only names matching the writer's own pattern), and
renames the new ones into place, so a reader sees the old set or the new one, not a torn shard. A killed export
leaves the old shards and some temp files, which the next export into the folder deletes.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import tempfile
from typing import Callable

from dataflow.io.atomic import fsync_dir

TEMP_PREFIX = ".export-"


class ShardSet:
    """The shards of one export in one folder.

    Args:
        folder: where the shards go (created).
        pattern: regular expression that matches exactly the file names this writer gives its shards.
        final_name: ``final_name(index, count)``: the name of shard ``index`` of ``count``, known once all are written.
    """

    def __init__(self, folder: str, pattern: str, final_name: Callable[[int, int], str]):
        self.folder = folder
        self.pattern = re.compile(pattern)
        self.final_name = final_name
        self.temps: list[str] = []
        os.makedirs(folder, exist_ok=True)
        for stale in glob.glob(os.path.join(glob.escape(folder), TEMP_PREFIX + "*.tmp")):
            with contextlib.suppress(OSError):
                os.unlink(stale)

    def new_temp(self) -> str:
        """A fresh temp path for the next shard."""
        fd, path = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{len(self.temps):05d}-", suffix=".tmp", dir=self.folder)
        os.close(fd)
        self.temps.append(path)
        return path

    def finish(self) -> list[str]:
        """Put the new shards in place of the old ones; return their paths in order."""
        count = len(self.temps)
        finals = [os.path.join(self.folder, self.final_name(i, count)) for i in range(count)]
        for temp in self.temps:
            fd = os.open(temp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        keep = {os.path.basename(path) for path in finals}
        for name in os.listdir(self.folder):
            if self.pattern.fullmatch(name) and name not in keep:
                os.unlink(os.path.join(self.folder, name))
        for temp, final in zip(self.temps, finals):
            os.replace(temp, final)
        fsync_dir(self.folder)
        self.temps = []
        return finals

    def abort(self) -> None:
        """Delete the temp files; the earlier shards stay."""
        for temp in self.temps:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        self.temps = []


def write_file(path: str, data: bytes) -> None:
    """Write ``data`` under a temp name and rename it to ``path`` (no fsync: ``fsync_dir`` the folder at the end)."""
    temp = os.path.join(os.path.dirname(path), f"{TEMP_PREFIX}{os.path.basename(path)}.tmp")
    with open(temp, "wb") as handle:
        handle.write(data)
    os.replace(temp, path)
