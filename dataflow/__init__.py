"""Instruction-based image editing at dataset scale, with a DataFlow-MM compatible API."""

from dataflow.logger import get_logger

__all__ = ["get_logger"]
__version__ = "0.1.0"
