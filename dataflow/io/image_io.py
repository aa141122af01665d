"""Reading reference images safely and saving edited images deterministically."""

from __future__ import annotations

import io
import os
from typing import Sequence, Union

from PIL import Image, ImageOps, UnidentifiedImageError

from dataflow.core.errors import RowError
from dataflow.io.atomic import atomic_write_bytes

# EXIF orientations 5-8 rotate by 90 or 270 degrees, so the displayed width and height are swapped.
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION_TAG = 0x0112


class ImageIO:
    """Decode input images to RGB and write outputs as ``{save_path}/sample_{i}/sample_{i}_{k}.png``.

    Args:
        save_path: folder that receives the edited images. Paths returned by ``write`` start with it as given,
            so a relative ``save_path`` gives relative output paths.

    Decoding applies the EXIF orientation, composites transparency onto white, and keeps Pillow's
    decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``). Every failure is a ``RowError`` naming the file.
    """

    def __init__(self, save_path: str = "./cache_local/images"):
        self.save_path = save_path

    # -- reading -----------------------------------------------------------------------------------------
    def read(self, path: Union[str, Sequence[str]]):
        """Decode one path to an RGB image, or a list of paths to a list of images."""
        if isinstance(path, (list, tuple)):
            return [self.read(p) for p in path]
        with self._open(path) as img:
            try:
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
            except (OSError, ValueError, SyntaxError) as exc:
                raise RowError(f"cannot decode image {path}: {exc}") from exc

    def probe(self, path: str) -> tuple[int, int]:
        """Return the displayed (width, height) of ``path`` after EXIF orientation, reading only the header."""
        with self._open(path) as img:
            width, height = img.size
            try:
                orientation = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
            except Exception:  # a broken EXIF block does not stop decoding; treat it as upright
                orientation = 1
            if orientation in _SWAPPING_ORIENTATIONS:
                width, height = height, width
            return width, height

    @staticmethod
    def _open(path: str) -> Image.Image:
        if not isinstance(path, str) or not path:
            raise RowError(f"image path must be a non-empty string, got {path!r}")
        if not os.path.exists(path):
            raise RowError(f"image file not found: {path}")
        if os.path.isdir(path):
            raise RowError(f"image path is a directory, not a file: {path}")
        if os.path.getsize(path) == 0:
            raise RowError(f"image file is empty: {path}")
        try:
            return Image.open(path)
        except Image.DecompressionBombError as exc:
            raise RowError(f"image {path} is too large to decode safely (decompression bomb guard): {exc}") from exc
        except UnidentifiedImageError as exc:
            raise RowError(f"not a readable image file: {path}") from exc
        except OSError as exc:
            raise RowError(f"cannot open image {path}: {exc}") from exc

    # -- writing -----------------------------------------------------------------------------------------
    def output_path(self, sample_index: int, k: int, suffix: str = "") -> str:
        """Where output ``k`` of row ``sample_index`` is saved (``suffix`` tells apart rows sharing an index)."""
        name = f"sample_{sample_index}{suffix}"
        return os.path.join(self.save_path, name, f"{name}_{k}.png")

    def write(self, sample_index: int, images: Sequence[Image.Image], suffix: str = "") -> list[str]:
        """Save ``images`` as PNG files for row ``sample_index``, atomically; return their paths."""
        paths = []
        for k, image in enumerate(images):
            path = self.output_path(sample_index, k, suffix)
            atomic_write_bytes(path, encode_png(image))
            paths.append(path)
        return paths


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of ``image``; Pillow writes no timestamp, so equal pixels give equal files."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert to RGB, putting transparent pixels on a white background instead of black."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    img.load()
    return img.copy()
