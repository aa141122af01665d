"""Graceful SIGINT/SIGTERM: the first signal asks the run to stop after the current batch; a second stops now."""

from __future__ import annotations

import signal
import threading
from typing import Optional

from dataflow.logger import get_logger

logger = get_logger()
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StoppedAtOnce(KeyboardInterrupt):
    """A second SIGINT or SIGTERM: stop now. A ``KeyboardInterrupt``, so that no ``except Exception`` on the way
    holds it up; ``signum`` keeps which signal it was, for the exit code (143 for SIGTERM, not 130)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class InterruptGuard:
    """Context manager that records the first SIGINT/SIGTERM in ``signum`` instead of dying at once.

    Handlers are installed only in the main thread (Python allows no other); elsewhere the guard is inert.
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "InterruptGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second signal: stop at once; the checkpoint already holds finished rows
            self.__exit__()
            raise StoppedAtOnce(signum)
        self.signum = signum
        logger.warning(
            "%s received: finishing the current batch, then saving progress (send it again to stop at once)",
            signal.Signals(signum).name,
        )
