"""The operator base class: one step of a pipeline, reading from and writing to a storage."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class OperatorABC(ABC):
    """An operator is configured by its constructor and applied by ``run(storage, ...)``."""

    @abstractmethod
    def run(self, storage: Any, *args: Any, **kwargs: Any) -> Any:
        """Read the current step from ``storage``, process it, and write the next step."""

    @staticmethod
    def get_desc(lang: str = "en") -> str:
        return ""
