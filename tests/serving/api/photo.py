"""A photo-like JPEG: the size class of a 12-megapixel camera file (about 2.5 MB at quality 90), made of soft
shapes, gradients and sensor-like noise, so that it compresses as photos do (noise alone would not)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def photo(width: int = 4000, height: int = 3000, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = max(2, width // 10), max(2, height // 10)  # the smooth scene, made small and scaled up
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    light = np.stack([200 * x + 30 * np.sin(9 * y), 180 * y + 40 * np.cos(7 * x), 120 + 80 * x * y], axis=-1)
    coarse = rng.integers(0, 256, (max(1, h // 10), max(1, w // 10), 3), dtype=np.uint8)
    shapes = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float32)
    scene = Image.fromarray(np.clip(0.6 * light + 0.4 * shapes, 0, 255).astype(np.uint8))
    pixels = np.asarray(scene.resize((width, height), Image.BICUBIC), dtype=np.int16)
    grain = rng.integers(-6, 7, (height, width, 1), dtype=np.int16)  # sensor-like noise, the same in each channel
    return Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8))


def write_photo_jpeg(path, width: int = 4000, height: int = 3000, quality: int = 90, exif=None) -> str:
    """Save ``photo()`` as a JPEG at ``path`` (with ``exif``, a ``PIL.Image.Exif``, when given); its path."""
    options = {"quality": quality}
    if exif is not None:
        options["exif"] = exif
    photo(width, height).save(path, format="JPEG", **options)
    return str(path)
