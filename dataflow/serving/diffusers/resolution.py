"""Where FLUX.1 Kontext inputs and outputs land in pixels.

diffusers' ``FluxKontextPipeline`` produces 1024x1024 whatever the input's shape, and snaps the reference image to
the preferred Kontext resolution nearest ``image[0]``'s aspect ratio, stretching every other image of the batch
to that size. We instead compute both sizes per row, so the output keeps the input's aspect ratio and rows are
batched only with rows of the same sizes.
"""

from __future__ import annotations

import math
from typing import Sequence

# The preferred Kontext resolutions all have an area close to this; they are scaled for other output areas.
KONTEXT_BASE_AREA = 1024 * 1024


def round_to_multiple(value: float, multiple: int) -> int:
    """Nearest multiple of ``multiple`` to ``value``, at least ``multiple``."""
    return max(multiple, int(round(value / multiple)) * multiple)


def output_size(width: int, height: int, area: int, multiple: int) -> tuple[int, int]:
    """(width, height) with the input's aspect ratio and about ``area`` pixels, each a multiple of ``multiple``."""
    _check_size(width, height)
    aspect = width / height
    return round_to_multiple(math.sqrt(area * aspect), multiple), round_to_multiple(math.sqrt(area / aspect), multiple)


def reference_size(
    width: int, height: int, preferred: Sequence[tuple[int, int]], area: int, multiple: int
) -> tuple[int, int]:
    """The preferred Kontext resolution nearest the input's aspect ratio, chosen as diffusers does.

    At the default 1024x1024 output area this is exactly diffusers' choice; for other areas the preferred
    resolution is scaled to that area, so a small output does not pay for a 1-megapixel reference.
    """
    _check_size(width, height)
    aspect = width / height
    _, pref_w, pref_h = min((abs(aspect - w / h), w, h) for w, h in preferred)
    scale = math.sqrt(area / KONTEXT_BASE_AREA)
    return round_to_multiple(pref_w * scale, multiple), round_to_multiple(pref_h * scale, multiple)


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
