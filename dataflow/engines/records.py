"""The finished rows of a run, by row index, held compactly so a million-row run stays small in memory."""

from __future__ import annotations

from typing import Optional, Sequence, Union

from dataflow.io.image_io import ImageIO

_Entry = Union[int, tuple, str]  # images under the default names (their count), other paths, or an error


def make_record(index: int, key: str, output: Sequence[str] = (), error: Optional[str] = None,
                warnings: int = 0, final: bool = False) -> dict:
    """A finished row as engines hand it to the driver and the checkpoint stores it.

    ``final`` marks an error a rerun keeps instead of trying the row again (see ``EditResult.final``).
    """
    record = {"key": key, "index": index, "output": list(output), "error": error}
    if warnings:
        record["warnings"] = warnings
    if final and error:
        record["final"] = True
    return record


class RecordStore:
    """Each finished row's output paths or error, by index.

    A row whose images sit under their default names (``ImageIO.output_path(index, k)``) is stored as the count
    of its images; any other outcome as a tuple of paths or the error message.
    """

    def __init__(self, image_io: ImageIO):
        self.image_io = image_io
        self._entries: dict[int, _Entry] = {}
        self.failed = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, index: int) -> bool:
        return index in self._entries

    def succeeded(self, index: int) -> bool:
        return index in self._entries and not isinstance(self._entries[index], str)

    def add(self, index: int, output: Sequence[str], error: Optional[str]) -> None:
        """Keep a row's outcome; a later outcome of the same row replaces the earlier one."""
        self.failed -= isinstance(self._entries.get(index), str)
        if error:
            self._entries[index] = error
            self.failed += 1
        elif list(output) == [self.image_io.output_path(index, k) for k in range(len(output))]:
            self._entries[index] = len(output)
        else:
            self._entries[index] = tuple(output)

    def outcome(self, index: int) -> Optional[tuple[list, Optional[str]]]:
        """(output paths, error) of a finished row; None if the row did not finish."""
        entry = self._entries.get(index)
        if entry is None:
            return None
        if isinstance(entry, str):
            return [], entry
        if isinstance(entry, int):
            return [self.image_io.output_path(index, k) for k in range(entry)], None
        return list(entry), None
