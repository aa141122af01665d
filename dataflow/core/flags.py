"""Command-line flags spelled two ways: ``--ray-address`` (the CLI) or ``--ray_address`` (the seed script).

The engine and speed options are defined once, beside the code that reads them, and added to either parser.
"""

from __future__ import annotations

from typing import Any, Callable


def flag_name(name: str, separator: str = "-") -> str:
    """``--`` and ``name`` with its underscores spelled as ``separator``."""
    return "--" + name.replace("_", separator)


def flag_adder(parser: Any, separator: str = "-") -> Callable[..., None]:
    """``add(name, **kwargs)``: ``parser.add_argument`` under ``flag_name(name, separator)``; the parsed value keeps
    the underscored ``name`` either way."""

    def add(name: str, **kwargs: Any) -> None:
        parser.add_argument(flag_name(name, separator), **kwargs)

    return add
