"""The output shape a request asks for, chosen from the first reference image as the local backends keep it:
the service's documented size or aspect ratio nearest the input's aspect ratio, and its image size nearest the
input's long side."""

from __future__ import annotations

import math
from typing import Sequence

MATCH_INPUT = "match_input"  # the option value that asks for the choice made from the first input image


def nearest_aspect(width: int, height: int, choices: Sequence[str], separator: str) -> str:
    """The choice (``"1536x1024"`` with ``separator="x"``, ``"16:9"`` with ``":"``) whose aspect ratio is nearest
    ``width / height``, compared on a log scale so that 2:1 and 1:2 are equally far from 1:1."""
    aspect = math.log(width / height)

    def distance(choice: str) -> float:
        w, h = (float(part) for part in choice.split(separator))
        return abs(math.log(w / h) - aspect)

    return min(choices, key=distance)


def nearest_edge(width: int, height: int, choices: dict) -> str:
    """The choice (``{"1K": 1024, ...}``) whose long edge is nearest the input's, on a log scale."""
    edge = math.log(max(width, height))
    return min(choices, key=lambda name: abs(math.log(choices[name]) - edge))
