"""What a run did, for the caller and for exit codes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class RunSummary:
    """Counts of a finished run.

    ``generated`` rows were edited in this run, ``reused`` rows came from an earlier run's progress file, and
    ``failed`` rows carry an error message in the output.
    """

    total: int
    generated: int
    reused: int
    failed: int
    seconds: float
    output_path: Optional[str] = None

    @property
    def exit_code(self) -> int:
        """0 when every row is done, 1 when some rows failed."""
        return 0 if self.failed == 0 else 1

    def describe(self) -> str:
        return (
            f"{self.total} rows: {self.generated} generated, {self.reused} reused from an earlier run, "
            f"{self.failed} failed, in {self.seconds:.1f} s"
        )
