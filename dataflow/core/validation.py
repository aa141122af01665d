"""Argument checks shared by servings, operators and storage, raised before any heavy work."""

from __future__ import annotations

from dataflow.core.errors import InputError


def check_positive_int(**values: object) -> None:
    """Raise ``InputError`` naming the first argument that is not a positive integer."""
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
