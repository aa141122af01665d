"""The change metric on synthetic pairs whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError
from dataflow.operators.core_vision.eval.metric import ScoreItem
from dataflow.operators.core_vision.eval.metrics.change import ChangeMetric
from tests.operators.eval.conftest import item, noise

pytest.importorskip("skimage")


def score(source, edited, **options) -> dict:
    (result,) = ChangeMetric(**options).score([item(source, edited)])
    assert result.error is None
    return result.values


def test_identical_images_are_unchanged():
    image = noise(64, 48)
    assert score(image, image.copy()) == {"changed_fraction": 0.0, "ssim": 1.0, "no_change": True}


def test_inverted_image_changes_nearly_every_pixel():
    image = noise(64, 48)
    inverted = Image.fromarray(255 - np.asarray(image))
    values = score(image, inverted)
    assert values["changed_fraction"] > 0.99
    assert values["ssim"] < 0
    assert values["no_change"] is False


def test_ten_percent_brighter_changes_the_pixels_that_moved_more_than_8():
    # a gray ramp holding every value 0..255; brightened by 10 % a value v moves by min(255, rint(1.1 v)) - v,
    # which exceeds 8 exactly for v in 85..246 (84 -> 92 moves 8; 247 -> 255 moves 8): 162 of 256 columns
    ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (8, 1, 3))
    brighter = np.clip(np.rint(ramp * 1.1), 0, 255).astype(np.uint8)
    moved = brighter[0, :, 0].astype(int) - np.arange(256)
    assert np.flatnonzero(moved > 8).tolist() == list(range(85, 247))
    values = score(Image.fromarray(ramp), Image.fromarray(brighter))
    assert values["changed_fraction"] == 162 / 256
    assert values["no_change"] is False
    assert 0.9 < values["ssim"] < 1


def test_pasted_patch_changes_exactly_its_area():
    source = Image.new("RGB", (100, 50), (120, 60, 30))
    edited = source.copy()
    edited.paste((200, 200, 200), (10, 5, 30, 15))  # 20 x 10 pixels
    assert score(source, edited)["changed_fraction"] == 200 / 5000


def test_small_change_counts_as_no_change_below_the_threshold():
    source = Image.new("RGB", (100, 100), (50, 50, 50))
    edited = source.copy()
    edited.paste((255, 0, 0), (0, 0, 7, 7))  # 49 of 10,000 pixels: 0.0049
    values = score(source, edited)
    assert values["changed_fraction"] == 0.0049 and values["no_change"] is True
    assert score(source, edited, no_change_below=0.004)["no_change"] is False
    assert score(source, edited, pixel_threshold=1.0)["changed_fraction"] == 0.0


def test_source_of_another_size_is_resized_to_the_edit_first_and_a_resize_is_a_change():
    """A pure resize used to count as no_change, so --drop-no-change dropped every resize edit."""
    flat = Image.new("RGB", (64, 64), (10, 200, 90))
    assert score(flat, Image.new("RGB", (128, 96), (10, 200, 90))) == {
        "changed_fraction": 0.0, "ssim": 1.0, "no_change": False}
    source = noise(40, 30, seed=3)
    edited = source.resize((80, 60), Image.Resampling.BICUBIC)
    assert score(source, edited, resample="bicubic")["changed_fraction"] == 0.0
    assert score(source, edited, resample="nearest")["changed_fraction"] > 0.1


def test_item_problems_are_item_errors_and_bad_options_input_errors():
    metric = ChangeMetric()
    no_source, tiny = metric.score([item(None, noise(8, 8)), item(noise(5, 5), noise(5, 5))])
    assert "no source image" in no_source.error
    assert "5x5" in tiny.error
    for options in ({"pixel_threshold": 2}, {"no_change_below": -0.1}, {"resample": "box"}, {"batch_size": 0}):
        with pytest.raises(InputError):
            ChangeMetric(**options)


def test_values_use_the_first_source_and_a_grayscale_edit_is_compared_as_rgb():
    source = Image.new("RGB", (32, 32), (128, 128, 128))
    result = ChangeMetric().score([
        ScoreItem("r/0", (source, noise(32, 32)), "x", Image.new("L", (32, 32), 128)),
    ])[0]
    assert result.values["changed_fraction"] == 0.0

