"""The classic backend: common global edits written in plain English, applied exactly with Pillow.

It needs no GPU and no model weights. It reads each instruction with ``dataflow.serving.classic.grammar`` and
returns a row error, never a silently unchanged image, for anything it cannot do exactly (object-level edits
such as "Change the vase to red." need a generative backend).
"""

from __future__ import annotations

from typing import Any, Sequence

from dataflow.core.errors import RowError
from dataflow.core.request import EditRequest, EditResult
from dataflow.core.serving import ImageEditServing
from dataflow.core.validation import check_positive_int
from dataflow.serving.classic.grammar import GRAMMAR_VERSION, MAX_INSTRUCTION_CHARS, parse
from dataflow.serving.classic.operations import apply_operations


class ClassicEditServing(ImageEditServing):
    """Tone, detail and geometry edits (brighter, sepia, blur, rotate 90 degrees, crop to 16:9 ...) with Pillow.

    The edit is deterministic, so a row asking for ``num_images`` outputs gets that many identical images.

    Args:
        image_io: the ``ImageIO`` that operators use to read inputs and write outputs.
        batch_size: rows per ``edit`` call; rows are edited one by one, so this only sizes the engine's batches.
    """

    def __init__(self, image_io: Any = None, batch_size: int = 8):
        check_positive_int(batch_size=batch_size)
        self.image_io = image_io
        self.batch_size = batch_size

    display_name = "the classic backend"
    max_instruction_chars = MAX_INSTRUCTION_CHARS

    def check_instruction(self, instruction: str) -> None:
        parse(instruction)

    def fingerprint(self) -> dict:
        return {"serving": "classic", "version": GRAMMAR_VERSION}

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        return [self._edit_one(request) for request in requests]

    @staticmethod
    def _edit_one(request: EditRequest) -> EditResult:
        """Parse and apply one row's instruction; an instruction it cannot do becomes that row's error."""
        try:
            edited = apply_operations(parse(request.instruction), request.image)
        except RowError as exc:
            return EditResult(error=str(exc))
        return EditResult(images=[edited] + [edited.copy() for _ in range(request.num_images - 1)])
