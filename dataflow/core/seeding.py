"""Per-image seeds that depend on the row, never on the batch it ran in."""

from __future__ import annotations

import hashlib


def image_seed(seed: int, row_key: str, k: int) -> int:
    """A 63-bit seed for output ``k`` of the row identified by ``row_key``."""
    digest = hashlib.sha256(f"{seed}\x1f{row_key}\x1f{k}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)
