"""The progress file that makes runs resumable.

``{step file}.progress.jsonl`` starts with a header holding the fingerprint of the model and generation
parameters, followed by one JSON line per finished row: ``{"key", "index", "output", "error", "signature"}``,
where ``signature`` says what the row asked for (its instruction and images: ``engines.tasks.row_signature``), so
that a rerun redoes a row whose ``id`` stayed while its instruction or image changed. Lines are
appended, flushed and fsynced every ``interval`` rows, so a kill loses at most the rows since the last flush.
A torn last line (a kill in the middle of a write) is ignored on read.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator, Optional, Union

from dataflow.core.errors import InputError
from dataflow.core.validation import check_positive_int
from dataflow.io.atomic import TEXT_ERRORS, fsync_dir, named_os_errors
from dataflow.logger import get_logger

logger = get_logger()

Settled = tuple[Union[tuple, str], Optional[int]]  # (output paths or a final error, signature): see ``finished``


def progress_path(step_file: str) -> str:
    """The progress file that belongs to ``step_file``."""
    return os.path.splitext(step_file)[0] + ".progress.jsonl"


class Checkpoint:
    """Append-only record of finished rows.

    Args:
        path: the progress file.
        fingerprint: what determines the output pixels; a file written under another fingerprint is refused.
        interval: rows per durable flush (DataFlow-MM's ``save_interval``).
    """

    def __init__(self, path: str, fingerprint: dict, interval: int = 10):
        check_positive_int(save_interval=interval)
        self.path = path
        self.fingerprint = _normalise(fingerprint)
        self.interval = interval
        self._pending: list[dict] = []
        self._handle = None

    def finished(self) -> dict[str, Settled]:
        """What an earlier run settled, by key (the last record of a key wins): ``(outcome, signature)``, where the
        outcome is the output paths of a row finished with images, or the message of a row that failed with a
        final error (``EditResult.final``), and the signature is the row's ``signature`` as an int (None in the
        records of versions that kept none).

        The file is read line by line and only paths, final errors and signatures are kept, so a resumed
        million-row run stays small. Other failed rows are left out: a rerun tries them again.
        """
        finished: dict[str, Settled] = {}
        for record in self._records():
            if not record.get("error") and record.get("output"):
                finished[record["key"]] = (tuple(record["output"]), _signature(record))
            elif record.get("error") and record.get("final"):
                finished[record["key"]] = (str(record["error"]), _signature(record))
            else:
                finished.pop(record["key"], None)
        return finished

    def _records(self) -> Iterator[dict]:
        """The records of the progress file after checking its header; damaged lines are skipped with a warning."""
        if not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as handle:
            header = _parse(handle.readline())
            if header is None or "fingerprint" not in header:
                raise InputError(f"{self.path} is not a progress file of this tool; move it away to start over")
            if _normalise(header["fingerprint"]) != self.fingerprint:
                raise InputError(self._mismatch_message(header["fingerprint"]))
            damaged = None  # a damaged line is reported only if another line follows it (a torn last line is not)
            for number, line in enumerate(handle, start=2):
                if damaged is not None:
                    logger.warning("%s line %d is damaged and was ignored", self.path, damaged)
                    damaged = None
                record = _parse(line)
                if record is not None and "key" in record:
                    yield record
                elif line.strip():
                    damaged = number

    def add(self, record: dict) -> None:
        """Queue a finished row; every ``interval`` rows the queue is made durable."""
        self._pending.append(record)
        if len(self._pending) >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Append queued rows, then flush and fsync."""
        if not self._pending:
            return
        with named_os_errors(self.path):
            if self._handle is None:
                self._open()
            self._handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self._pending))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _open(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        self._handle = open(self.path, "a", encoding="utf-8", errors=TEXT_ERRORS)  # a lone surrogate: escaped
        if new:
            self._handle.write(json.dumps({"fingerprint": self.fingerprint}) + "\n")
        elif not _ends_with_newline(self.path):
            self._handle.write("\n")  # seal a torn last line so the next record starts on its own line
        if new:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            fsync_dir(folder)

    def _mismatch_message(self, old: dict) -> str:
        old = _normalise(old)
        changed = [
            f"{k}: {old.get(k)!r} -> {self.fingerprint.get(k)!r}"
            for k in sorted(set(old) | set(self.fingerprint))
            if old.get(k) != self.fingerprint.get(k)
        ]
        return (
            f"{self.path} holds results made with other settings ({'; '.join(changed)}). Reusing them would mix "
            "outputs of different settings. Use another cache path for the new settings, or delete that file to "
            "regenerate every row."
        )


def _signature(record: dict) -> Optional[int]:
    """A record's ``signature`` (hex) as an int, which takes less memory than its text; None when absent."""
    try:
        return int(record["signature"], 16)
    except (KeyError, TypeError, ValueError):
        return None


def _parse(line: str) -> Optional[dict[str, Any]]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) and ("key" in value or "fingerprint" in value) else None


def _normalise(fingerprint: dict) -> dict:
    return json.loads(json.dumps(fingerprint, sort_keys=True, default=str))


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"
