"""The metric protocol: a batch of (source images, instruction, edited image) items in, one score dict each out.

A metric is built from plain keyword arguments and loads its model lazily, so that engines can build it inside a
worker (as servings are). ``score`` keeps the order of its items; a problem with one item (say, a judge's answer
that cannot be parsed) is that item's ``ScoreResult.error``, never an exception; an exception means the metric
itself failed (a model that cannot load, a refused API key) and stops the run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence


@dataclass(frozen=True)
class ScoreItem:
    """One edited image to score.

    Args:
        key: the row's identity and the edited image's position (``"{row key}/{k}"``): seeds and caches use it.
        sources: the row's reference images (RGB), in order; the first is the one that was edited.
        instruction: the edit the row asked for.
        edited: the edited image (RGB).
    """

    key: str
    sources: tuple
    instruction: str
    edited: Any


@dataclass
class ScoreResult:
    """The values of one metric for one item (JSON-able: numbers, booleans, strings), or why there are none."""

    values: dict = field(default_factory=dict)
    error: Optional[str] = None


class Metric(ABC):
    """Base class of edit metrics.

    ``name`` keys the metric's values in a row's ``scores`` entry. ``batch_size`` is how many items one ``score``
    call takes; ``concurrency`` > 1 lets an engine run that many ``score`` calls at once from threads (remote
    judges), in which case ``score`` must be thread-safe.
    """

    name: str = ""
    batch_size: int = 16
    concurrency: int = 1

    def fingerprint(self) -> dict:
        """What determines the values (model, prompt, parameters; never a key)."""
        return {"metric": self.name}

    @abstractmethod
    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        """One result per item, in order."""

    def check(self) -> Optional[str]:
        """Raise ``ModelLoadError``/``ServiceError`` if the metric cannot be used; return a note, or None."""
        return None

    def check_dependencies(self) -> None:
        """Raise ``InputError``/``ModelLoadError`` saying what to install when a package the metric needs is
        missing. Cheap (imports only); called before any row is read, so a missing extra is one line, not a
        failed run."""

    def usage(self) -> dict:
        """Counters worth reporting (requests sent, tokens ...); default none."""
        return {}

    def use_device(self, device: str) -> None:
        """Run on ``device`` ("cuda", "cpu"); the default ignores it."""

    def close(self) -> None:
        """Release models and connections."""
