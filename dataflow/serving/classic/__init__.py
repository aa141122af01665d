"""The classic backend: common global edits written in plain English, applied exactly with Pillow."""

from dataflow.serving.classic.grammar import GRAMMAR_VERSION, Amount, parse
from dataflow.serving.classic.operations import (
    AutoContrast,
    Blur,
    CenterCrop,
    Enhance,
    Equalize,
    Flip,
    Grayscale,
    Invert,
    Operation,
    Posterize,
    Resize,
    Rotate,
    Scale,
    Sepia,
    Warmth,
    apply_operations,
)

__all__ = [
    "GRAMMAR_VERSION",
    "Amount",
    "parse",
    "apply_operations",
    "Operation",
    "AutoContrast",
    "Blur",
    "CenterCrop",
    "Enhance",
    "Equalize",
    "Flip",
    "Grayscale",
    "Invert",
    "Posterize",
    "Resize",
    "Rotate",
    "Scale",
    "Sepia",
    "Warmth",
]
