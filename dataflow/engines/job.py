"""An edit job: the rows, where their fields are, the serving, and where results go."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Sequence, Union

from dataflow.core.errors import InputError, ModelLoadError
from dataflow.core.serving import ImageEditServing
from dataflow.engines.tasks import RowKeys, row_digest
from dataflow.io.image_io import ImageIO
from dataflow.io.model_source import UNKNOWN_LICENSE, license_label

if TYPE_CHECKING:
    from dataflow.engines.records import RecordStore

NOT_PROCESSED = "not processed (the run stopped before this row)"


@dataclass
class EditJob:
    """Everything an engine needs to edit a table of rows.

    Args:
        rows: the input rows: a list of dicts, or a re-iterable source such as ``FileStorage.stream()``, which
            is read once to plan and once more to write the output, so a large input is never held in memory.
        serving: the editing backend.
        image_io: saves the edited images.
        base_dir: folder that relative image paths are resolved against.
        progress_file: the checkpoint that makes the run resumable.
        image_key, conversation_key, output_key: field names in the rows.
        save_interval: finished rows per durable checkpoint flush.
        edited_key: set for a job that scores edits instead of making them: the field holding each row's edited
            image paths (the serving returns values, stored under ``output_key``, and writes no file).
        edited_dir: folder that relative edited image paths are resolved against (default: the working
            directory, where the run that made them wrote them).
    """

    rows: Union[list, Iterable]
    serving: ImageEditServing
    image_io: ImageIO
    base_dir: str
    progress_file: str
    image_key: str = "images"
    conversation_key: str = "conversations"
    output_key: str = "output_image"
    save_interval: int = 10
    edited_key: Optional[str] = None
    edited_dir: Optional[str] = None

    @property
    def writes_files(self) -> bool:
        """True for an edit job (outputs are image files), False for a scoring job (outputs are values)."""
        return self.edited_key is None

    @property
    def error_key(self) -> str:
        return f"{self.output_key}_error"

    def output_folders(self) -> list[str]:
        """The folders this job writes into: the progress file's, and the image folder of an edit job."""
        folders = [os.path.dirname(os.path.abspath(self.progress_file))]
        if self.writes_files:
            folders.append(os.path.abspath(self.image_io.save_path))
        return list(dict.fromkeys(os.path.realpath(f) for f in folders))

    @property
    def license_key(self) -> str:
        return f"{self.output_key}_license"

    def model_license(self) -> Optional[str]:
        """The licence of the model that made the images (servings with a ``model_info``), or None."""
        info = getattr(self.serving, "model_info", None)
        if info is None or not self.writes_files:
            return None
        try:
            return license_label(info())
        except ModelLoadError:  # the folder cannot be read now: say unknown, never guess
            return UNKNOWN_LICENSE

    def iter_rows(self) -> Iterator[dict]:
        return iter(self.rows)

    def numbered_rows(self) -> Iterator[tuple[Optional[int], dict]]:
        """(line number in the input file, or None where the source has no lines, row) pairs."""
        numbered = getattr(self.rows, "numbered", None)
        return numbered() if numbered is not None else ((None, row) for row in self.rows)

    def output_rows(self, records: "RecordStore", planned: Optional[Sequence[int]] = None
                    ) -> Union[list, Iterator[dict]]:
        """Input rows with the output paths added, an error message on the rows that failed, and the licence of the
        model that made them (``output_image_license``) where the serving knows its model.

        A list for a list of rows; for a streamed source, an iterator that reads the source again. ``planned``
        holds ``row_digest`` of each row as the run planned it: a row read again must be the same row (key,
        image value, conversation) at the same place, so a result is never paired with a row by position alone.
        Where the input changed during the run (a row inserted, deleted, appended or edited), ``InputError`` says
        so before a wrong row is written; the step file is written atomically, so nothing of it is left, while
        the checkpoint keeps every finished row for a rerun.
        """
        rows = self._output_rows(records, planned, self.model_license())
        return list(rows) if isinstance(self.rows, list) else rows

    def _output_rows(self, records: "RecordStore", planned: Optional[Sequence[int]],
                     licence: Optional[str]) -> Iterator[dict]:
        keys = RowKeys(self.image_key, self.conversation_key)
        count = 0
        for index, (line, row) in enumerate(self.numbered_rows()):
            if planned is not None and (index >= len(planned) or planned[index] != self._digest(keys, row)):
                where = f"line {line}" if line is not None else f"row {index + 1}"
                raise InputError(self._changed_message(f"{where} is not the row the run planned there"))
            count = index + 1
            yield self._output_row(index, row, records, licence)
        if planned is not None and count != len(planned):
            raise InputError(self._changed_message(f"it has {count} rows, not the {len(planned)} planned"))

    def _digest(self, keys: RowKeys, row: dict) -> int:
        return row_digest(keys.next(row), row, self.image_key, self.conversation_key)

    def _changed_message(self, what: str) -> str:
        source = getattr(self.rows, "path", "the input")
        return (f"{source} changed during the run ({what}); no step file was written, so that no row gets "
                "another row's result. Finished rows are checkpointed: run the same command again, with the "
                "input left as it is, to edit what changed and write the step file.")

    def _output_row(self, index: int, row: dict, records: "RecordStore",
                    licence: Optional[str] = None) -> dict:
        row = dict(row)
        row.pop(self.error_key, None)
        row.pop(self.license_key, None)  # an earlier step's, when the input is an earlier output
        if licence is not None:
            row[self.license_key] = licence
        outcome = records.outcome(index)
        if outcome is None:
            row[self.output_key] = []
            row[self.error_key] = NOT_PROCESSED
        else:
            row[self.output_key] = list(outcome[0])
            if outcome[1]:
                row[self.error_key] = outcome[1]
        return row
