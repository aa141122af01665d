"""An edit job: the rows, where their fields are, the serving, and where results go."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from dataflow.core.serving import ImageEditServing
from dataflow.io.image_io import ImageIO


@dataclass
class EditJob:
    """Everything an engine needs to edit a table of rows.

    Args:
        rows: the input rows, as dicts.
        serving: the editing backend.
        image_io: saves the edited images.
        base_dir: folder that relative image paths are resolved against.
        progress_file: the checkpoint that makes the run resumable.
        image_key, conversation_key, output_key: field names in the rows.
        save_interval: finished rows per durable checkpoint flush.
    """

    rows: list
    serving: ImageEditServing
    image_io: ImageIO
    base_dir: str
    progress_file: str
    image_key: str = "images"
    conversation_key: str = "conversations"
    output_key: str = "output_image"
    save_interval: int = 10

    @property
    def error_key(self) -> str:
        return f"{self.output_key}_error"

    def output_rows(self, records: dict[int, dict]) -> list[dict]:
        """Input rows with the output paths added, and an error message on the rows that failed."""
        out = []
        for index, row in enumerate(self.rows):
            row = dict(row)
            record: Optional[dict] = records.get(index)
            row.pop(self.error_key, None)
            if record is None:
                row[self.output_key] = []
                row[self.error_key] = "not processed (the run stopped before this row)"
            else:
                row[self.output_key] = list(record["output"])
                if record.get("error"):
                    row[self.error_key] = record["error"]
            out.append(row)
        return out
