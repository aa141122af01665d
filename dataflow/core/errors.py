"""Exceptions with messages meant for users.

``DataflowError`` and its subclasses carry a message that the CLI prints as-is, without a traceback.
"""


class DataflowError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(DataflowError):
    """The input file, its rows as a whole, or an option is invalid; nothing was generated (exit code 2)."""


class ModelLoadError(DataflowError):
    """The model could not be found, downloaded or loaded."""


class ServiceError(DataflowError):
    """A remote service refused the run itself (a bad key, an unknown model or URL): every row would fail the same
    way, so the run stops after the requests already in flight, keeping what finished."""


class RowError(DataflowError):
    """One row cannot be processed. The run records the message in that row and goes on."""


class RunInterrupted(DataflowError):
    """SIGINT or SIGTERM stopped a run after its finished rows were checkpointed."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def is_out_of_memory(exc: BaseException) -> bool:
    """True for accelerator out-of-memory errors (``torch.OutOfMemoryError`` and its older message form)."""
    return type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )
