"""The bytes an export stores for one image file: the file's own bytes when it already has the asked format.

``--image-format png`` (the default) copies PNG files byte for byte and re-encodes any other file as PNG, which is
lossless: the decoded pixels (after the EXIF orientation, as ``ImageIO`` and ``datasets`` apply it) are kept
exactly. ``--image-format jpeg`` copies JPEG files and encodes the others as JPEG at ``JPEG_QUALITY``.
``keep_bytes`` keeps any file's bytes whatever their format (the parquet exports do this for source images,
since an ``Image`` feature holds any format).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from dataflow.core.errors import RowError
from dataflow.io.image_io import png_problem
from dataflow.io.sources import embedded_ref, read_source_bytes

IMAGE_FORMATS = ("png", "jpeg")
EXTENSIONS = {"png": "png", "jpeg": "jpg"}
JPEG_QUALITY = 95
_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg"}
_PILLOW_NAMES = {"png": "PNG", "jpeg": "JPEG"}


@dataclass(frozen=True)
class EncodedImage:
    """An image as stored: its bytes, the format they are in, and a file name for the ``path`` of the record."""

    data: bytes
    fmt: str  # "png", "jpeg", or Pillow's lower-case name of a kept format ("webp")
    name: str

    @property
    def ext(self) -> str:
        return EXTENSIONS.get(self.fmt, self.fmt)


def sniff(data: bytes) -> str | None:
    """"png" or "jpeg" from the first bytes; None for anything else."""
    for magic, fmt in _MAGIC.items():
        if data.startswith(magic):
            return fmt
    return None


def encode_file(path: str, fmt: str = "png", keep_bytes: bool = False) -> EncodedImage:
    """The stored form of the image file ``path``; ``RowError`` naming the file when it is missing or not an image.

    Args:
        path: the image file, or a reference to an image embedded in a dataset shard (its bytes are the file's).
        fmt: "png" or "jpeg": the format of what is stored, unless ``keep_bytes``.
        keep_bytes: store the file's bytes as they are, in whatever format the file is.
    """
    data = read_source_bytes(path)
    ref = embedded_ref(path)
    base = ref.name if ref is not None else os.path.basename(path)
    stem = os.path.splitext(base)[0] if "." in base else base
    found = sniff(data)
    problem = png_problem(data) if found == "png" else None  # bytes copied as they are must be a whole PNG
    if problem:
        raise RowError(f"not a readable image: {path} ({problem})")
    if found == fmt or (keep_bytes and found):
        return EncodedImage(data, found, f"{stem}.{EXTENSIONS[found]}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if keep_bytes and img.format:
                name = base if "." in base else f"{base}.{img.format.lower()}"
                return EncodedImage(data, img.format.lower(), name)
            img.load()
            image = ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise RowError(f"not a readable image: {path} ({exc})") from None
    return EncodedImage(encode(image, fmt), fmt, f"{stem}.{EXTENSIONS[fmt]}")


def encode(image: Image.Image, fmt: str) -> bytes:
    """``image`` as PNG (every mode PNG holds is kept) or JPEG (converted to RGB unless it is L or RGB)."""
    buffer = io.BytesIO()
    if fmt == "png":
        if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        image.save(buffer, format="PNG")
    else:
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        image.save(buffer, format=_PILLOW_NAMES[fmt], quality=JPEG_QUALITY)
    return buffer.getvalue()
