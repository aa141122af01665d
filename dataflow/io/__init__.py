"""Image reading and writing (``from dataflow.io import ImageIO``)."""

from dataflow.io.image_io import ImageIO

__all__ = ["ImageIO"]
