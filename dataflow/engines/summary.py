"""What a run did, for the caller and for exit codes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class RunSummary:
    """Counts of a finished run.

    ``generated`` rows were edited in this run, ``reused`` rows came from an earlier run's progress file, and
    ``failed`` rows carry an error message in the output. ``warnings`` counts the decoder warnings of this run's
    input images (logged at debug level, with the file each belongs to); ``usage`` holds the serving's counters
    (requests, retries, tokens, ...) where it keeps any. Of the ``generated`` rows, ``changed`` ones had an
    earlier result made for another instruction or image (a row whose ``id`` stayed), and ``damaged`` ones an
    earlier output image that was missing or cut short: both were edited again.
    """

    total: int
    generated: int
    reused: int
    failed: int
    seconds: float
    output_path: Optional[str] = None
    warnings: int = 0
    usage: dict = field(default_factory=dict)
    changed: int = 0
    damaged: int = 0

    @property
    def exit_code(self) -> int:
        """0 when every row is done, 1 when some rows failed."""
        return 0 if self.failed == 0 else 1

    def describe(self) -> str:
        text = (
            f"{self.total} rows: {self.generated} generated, {self.reused} reused from an earlier run, "
            f"{self.failed} failed, in {self.seconds:.1f} s"
        )
        if self.changed or self.damaged:
            text += (f"; redone: {self.changed} whose instruction or image changed since the earlier run, "
                     f"{self.damaged} whose earlier image was missing or damaged")
        if self.warnings:
            text += f"; {self.warnings} image decoder warnings (shown with --debug)"
        return text

    def describe_usage(self) -> Optional[str]:
        """The serving's counters on one line, or None when it keeps none."""
        return describe_usage(self.usage) if self.usage else None


def describe_usage(usage: dict) -> str:
    """``requests: 40, retries: 3, ...``: a serving's counters (``ImageEditServing.usage()``) on one line."""
    return ", ".join(f"{name.replace('_', ' ')}: {value}" for name, value in usage.items())
