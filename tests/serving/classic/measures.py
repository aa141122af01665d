"""Test images and the pixel statistics the classic-backend tests assert on."""

import numpy as np
from PIL import Image


def noise(width=24, height=16, low=0, high=256, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(low, high, (height, width, 3), dtype=np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def luminance(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64)


def mean_saturation(image: Image.Image) -> float:
    return float(np.asarray(image.convert("HSV"))[..., 1].mean())


def high_frequency(image: Image.Image) -> float:
    """Mean absolute difference between neighbouring pixels of the luminance."""
    lum = luminance(image)
    return np.abs(np.diff(lum, axis=0)).mean() + np.abs(np.diff(lum, axis=1)).mean()


def red_blue_ratio(image: Image.Image) -> float:
    values = pixels(image)
    return values[..., 0].mean() / values[..., 2].mean()
