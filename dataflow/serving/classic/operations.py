"""Global edits that Pillow applies exactly.

Each operation is a frozen dataclass: its fields are the whole edit, and ``apply`` maps an RGB image to a new RGB
image without touching the input. The grammar (``grammar.py``) turns plain English into a list of these.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from dataflow.core.errors import RowError

# Corners uncovered by a rotation that is not a multiple of 90 degrees are painted white, as ImageIO paints
# transparency.
ROTATION_FILL = (255, 255, 255)

_ENHANCERS = {
    "brightness": ImageEnhance.Brightness,
    "contrast": ImageEnhance.Contrast,
    "saturation": ImageEnhance.Color,
    "sharpness": ImageEnhance.Sharpness,
}

# The classic sepia matrix (rows give output R, G, B). Every coefficient of a row is at least the one below it,
# so each output pixel has R >= G >= B.
_SEPIA_MATRIX = (
    0.393, 0.769, 0.189, 0.0,
    0.349, 0.686, 0.168, 0.0,
    0.272, 0.534, 0.131, 0.0,
)

_QUARTER_TURNS = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


class Operation(ABC):
    """One global edit."""

    @abstractmethod
    def apply(self, image: Image.Image) -> Image.Image:
        """Return the edited copy of the RGB ``image``."""


@dataclass(frozen=True)
class Enhance(Operation):
    """Scale brightness, contrast, saturation or sharpness by ``factor`` with ``PIL.ImageEnhance``.

    A factor of 1 keeps the image, 0 gives black (brightness), flat grey (contrast), grey (saturation) or the
    smoothed image (sharpness); above 1 strengthens the quality.
    """

    quality: str
    factor: float

    def __post_init__(self):
        if self.quality not in _ENHANCERS:
            raise ValueError(f"unknown quality {self.quality!r}; expected one of {sorted(_ENHANCERS)}")
        if self.factor < 0:
            raise ValueError(f"factor must be >= 0, got {self.factor}")

    def apply(self, image):
        return _ENHANCERS[self.quality](image).enhance(self.factor)


@dataclass(frozen=True)
class Warmth(Operation):
    """Shift the colour temperature: red gain ``1 + shift / 2``, blue gain ``1 - shift / 2``; negative cools."""

    shift: float

    def apply(self, image):
        red, green, blue = image.split()
        red = red.point(_gain_table(1 + self.shift / 2))
        blue = blue.point(_gain_table(1 - self.shift / 2))
        return Image.merge("RGB", (red, green, blue))


@dataclass(frozen=True)
class Grayscale(Operation):
    """Replace each pixel by its luma (ITU-R 601-2), kept as RGB so R = G = B."""

    def apply(self, image):
        return ImageOps.grayscale(image).convert("RGB")


@dataclass(frozen=True)
class Sepia(Operation):
    """The classic sepia tone matrix; every output pixel has R >= G >= B."""

    def apply(self, image):
        return image.convert("RGB", _SEPIA_MATRIX)


@dataclass(frozen=True)
class Invert(Operation):
    """The photographic negative: every channel value v becomes 255 - v."""

    def apply(self, image):
        return ImageOps.invert(image)


@dataclass(frozen=True)
class AutoContrast(Operation):
    """Stretch the luminance histogram to the full 0-255 range, keeping hues (``preserve_tone``)."""

    def apply(self, image):
        return ImageOps.autocontrast(image, preserve_tone=True)


@dataclass(frozen=True)
class Equalize(Operation):
    """Equalize each channel's histogram."""

    def apply(self, image):
        return ImageOps.equalize(image)


@dataclass(frozen=True)
class Posterize(Operation):
    """Round each channel to ``levels`` evenly spaced values from 0 to 255."""

    levels: int

    def __post_init__(self):
        if not 2 <= self.levels <= 256:
            raise ValueError(f"levels must be between 2 and 256, got {self.levels}")

    def apply(self, image):
        step = 255 / (self.levels - 1)
        table = [round(round(value / step) * step) for value in range(256)]
        return image.point(table * 3)


@dataclass(frozen=True)
class Blur(Operation):
    """Gaussian blur of ``radius`` pixels, or, when ``relative``, of ``radius`` times the image's shorter side.

    The relative form makes "blur" look the same at every resolution of a dataset.
    """

    radius: float
    relative: bool = False

    def apply(self, image):
        radius = self.radius * min(image.size) if self.relative else self.radius
        return image.filter(ImageFilter.GaussianBlur(radius))


@dataclass(frozen=True)
class Rotate(Operation):
    """Rotate counter-clockwise by ``degrees`` (negative turns clockwise).

    Multiples of 90 degrees are exact transposes. Other angles use bicubic resampling with ``expand=True``, so
    nothing is cut off, and fill the uncovered corners with ``ROTATION_FILL`` (white).
    """

    degrees: float

    def apply(self, image):
        angle = self.degrees % 360
        if angle == 0:
            return image.copy()
        if angle in _QUARTER_TURNS:
            return image.transpose(_QUARTER_TURNS[angle])
        return image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=ROTATION_FILL)


@dataclass(frozen=True)
class Flip(Operation):
    """Mirror left-right when ``horizontal``, otherwise top-bottom."""

    horizontal: bool

    def apply(self, image):
        return ImageOps.mirror(image) if self.horizontal else ImageOps.flip(image)


@dataclass(frozen=True)
class CenterCrop(Operation):
    """Cut the largest centred box whose width : height is ``ratio_width : ratio_height``."""

    ratio_width: float
    ratio_height: float

    def __post_init__(self):
        if self.ratio_width <= 0 or self.ratio_height <= 0:
            raise ValueError(f"aspect ratio must be positive, got {self.ratio_width}:{self.ratio_height}")

    def apply(self, image):
        width, height = image.size
        target = self.ratio_width / self.ratio_height
        if width / height > target:
            crop_width, crop_height = max(1, round(height * target)), height
        else:
            crop_width, crop_height = width, max(1, round(width / target))
        left, top = (width - crop_width) // 2, (height - crop_height) // 2
        return image.crop((left, top, left + crop_width, top + crop_height))


@dataclass(frozen=True)
class Resize(Operation):
    """Resize to exactly ``width`` x ``height`` pixels (Lanczos), whatever the input's aspect ratio."""

    width: int
    height: int

    def apply(self, image):
        return _resized(image, self.width, self.height)


@dataclass(frozen=True)
class Scale(Operation):
    """Multiply both sides by ``factor`` (Lanczos), rounding to whole pixels and keeping at least one."""

    factor: float

    def __post_init__(self):
        if self.factor <= 0:
            raise ValueError(f"scale factor must be positive, got {self.factor}")

    def apply(self, image):
        width, height = image.size
        return _resized(image, max(1, round(width * self.factor)), max(1, round(height * self.factor)))


def apply_operations(operations: Sequence[Operation], image: Image.Image) -> Image.Image:
    """Apply ``operations`` in order to an RGB copy of ``image``."""
    result = image.convert("RGB") if image.mode != "RGB" else image.copy()
    for operation in operations:
        result = operation.apply(result)
    return result


def _gain_table(gain: float) -> list[int]:
    """A 256-entry lookup table multiplying a channel by ``gain``, clipped to 0-255."""
    return [max(0, min(255, round(value * gain))) for value in range(256)]


def _resized(image: Image.Image, width: int, height: int) -> Image.Image:
    """Lanczos resize, refusing outputs larger than Pillow's decompression-bomb limit."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise RowError(
            f"resizing to {width}x{height} would exceed the {limit}-pixel limit (PIL.Image.MAX_IMAGE_PIXELS)"
        )
    return image.resize((width, height), Image.Resampling.LANCZOS)
