"""``ChangeMetric``: how much of the source an edit changed, without a model (catches edits that did nothing)."""

from __future__ import annotations

from typing import Any, Sequence

from dataflow.core.errors import InputError
from dataflow.core.validation import check_positive_int
from dataflow.operators.core_vision.eval.metric import Metric, ScoreItem, ScoreResult
from dataflow.operators.core_vision.eval.metrics.images import source_and_edit

RESAMPLING = ("nearest", "bilinear", "bicubic", "lanczos")


def import_ssim() -> Any:
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        raise InputError("the change metric needs scikit-image: pip install 'dataflow-edit[eval]'") from None
    return structural_similarity


class ChangeMetric(Metric):
    """Pixel change and structural similarity of an edit against its first source.

    The source is first resized to the edit's size with ``resample`` (Lanczos by default), so the pixel change
    and SSIM measure what changed in the content, whatever the resolution. A resize is still a change: an edit of
    another size than its source never counts as ``no_change``.

    Values:
        changed_fraction: the share of pixels whose largest channel difference exceeds ``pixel_threshold``
            (on a 0-1 scale; 8/255 by default, above JPEG noise).
        ssim: structural similarity (``skimage.metrics.structural_similarity``, 7x7 windows, ``data_range`` 255)
            of the two images' luminance (PIL's "L": ITU-R 601-2 luma, 8 bits); 1 for identical images.
        no_change: the edit has its source's size and ``changed_fraction < no_change_below`` (0.005 by default).

    Args:
        pixel_threshold: the channel difference (0-1) above which a pixel counts as changed.
        no_change_below: the changed fraction below which an edit counts as no change.
        resample: "nearest", "bilinear", "bicubic" or "lanczos".
        batch_size: items per ``score`` call.
    """

    name = "change"

    def __init__(self, pixel_threshold: float = 8 / 255, no_change_below: float = 0.005,
                 resample: str = "lanczos", batch_size: int = 64):
        check_positive_int(batch_size=batch_size)
        for option, value in (("pixel_threshold", pixel_threshold), ("no_change_below", no_change_below)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise InputError(f"{option} must be a number between 0 and 1, got {value!r}")
        if resample not in RESAMPLING:
            raise InputError(f"resample must be one of {', '.join(RESAMPLING)}, got {resample!r}")
        self.pixel_threshold = float(pixel_threshold)
        self.no_change_below = float(no_change_below)
        self.resample = resample
        self.batch_size = batch_size

    # 2: an edit of another size than its source is a change (no_change was true for a pure resize)
    VERSION = 2

    def fingerprint(self) -> dict:
        return {"metric": self.name, "version": self.VERSION, "pixel_threshold": self.pixel_threshold,
                "no_change_below": self.no_change_below, "resample": self.resample}

    def check(self) -> None:
        import_ssim()

    def check_dependencies(self) -> None:
        import_ssim()

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        return [self.score_one(item) for item in items]

    def score_one(self, item: ScoreItem) -> ScoreResult:
        import numpy as np
        from PIL import Image

        structural_similarity = import_ssim()
        try:
            source, edit = source_and_edit(item)
        except ValueError as exc:
            return ScoreResult(error=str(exc))
        resized = source.size != edit.size
        if resized:
            source = source.resize(edit.size, getattr(Image.Resampling, self.resample.upper()))
        a = np.asarray(source, dtype=np.int16)
        b = np.asarray(edit, dtype=np.int16)
        largest = np.abs(a - b).max(axis=2)
        changed = float(np.mean(largest / 255.0 > self.pixel_threshold))
        width, height = edit.size
        if min(width, height) < 7:
            return ScoreResult(error=f"the edit is {width}x{height}; SSIM needs at least 7x7 pixels")
        ssim = structural_similarity(np.asarray(source.convert("L")), np.asarray(edit.convert("L")), win_size=7,
                                     data_range=255)
        return ScoreResult({"changed_fraction": changed, "ssim": float(ssim),
                            "no_change": not resized and changed < self.no_change_below})
