"""The serving protocol every editing backend implements.

A serving turns a batch of ``EditRequest`` into one ``EditResult`` per request, in order. It is built from plain
keyword arguments, so that local, multi-process and Ray engines can each construct it inside a worker.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Hashable, Optional, Sequence

from dataflow.core.request import EditRequest, EditResult


class ImageEditServing(ABC):
    """Base class of editing backends.

    Subclasses set ``batch_size`` and ``num_images_per_request`` and implement ``edit``. A problem with one row
    (say, an instruction the backend cannot do) is returned as an ``EditResult`` with ``error`` set; an exception
    means the backend itself failed.

    ``concurrency`` > 1 lets an engine run that many ``edit`` calls at once from threads of one process (remote
    APIs, where a call waits on the network); such a serving's ``edit`` must be thread-safe. ``max_input_images``
    is how many reference images one row may have (None: no limit); rows with more fail before any work.
    ``wants_source_files`` asks the engine for each image's file bytes as well (``EditRequest.files``: a remote
    API that takes JPEG as it is), ``wants_earlier_turns`` for the conversation's earlier user messages
    (``EditRequest.earlier_turns``: editing turn by turn). ``max_instruction_chars`` bounds an instruction's
    length (None: no bound); a longer one fails its row before any work, so that a runaway field costs nothing.
    """

    batch_size: int = 1
    num_images_per_request: int = 1
    concurrency: int = 1
    max_input_images: Optional[int] = 1
    wants_source_files: bool = False
    wants_earlier_turns: bool = False
    max_instruction_chars: Optional[int] = None
    image_io: Any = None

    @property
    def display_name(self) -> str:
        """What messages call this backend (e.g. "the classic backend")."""
        return type(self).__name__

    def bucket_key(self, width: int, height: int) -> Hashable:
        """Rows whose keys are equal may share a batch. The default puts every row in one bucket."""
        return None

    def check_instruction(self, instruction: str) -> None:
        """Raise ``RowError`` if this backend cannot carry out ``instruction``. Used by dry runs."""

    def check_model(self) -> Optional[str]:
        """Raise ``ModelLoadError`` if the model cannot be used; return a note worth telling, or None."""
        return None

    def fingerprint(self) -> dict:
        """The model and parameters that determine the output pixels; a changed fingerprint invalidates results."""
        return {"serving": type(self).__name__}

    @abstractmethod
    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        """Edit a batch of requests and return one result per request, in order."""

    def usage(self) -> dict:
        """Counters worth reporting at the end of a run (requests sent, retries, tokens, ...); default none."""
        return {}

    def use_device(self, device: str) -> None:
        """Run on ``device`` ("cuda", "cpu"); engines call this in each worker. The default ignores it."""

    def release_memory(self) -> None:
        """Free cached accelerator memory after an out-of-memory error. The default does nothing."""

    def close(self) -> None:
        """Release models and memory. The default does nothing."""
