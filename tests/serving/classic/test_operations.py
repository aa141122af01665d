"""Each classic operation on tiny synthetic images, checked pixel by pixel or by a statistic it must move."""

import numpy as np
import pytest
from PIL import Image, ImageOps

from dataflow.core.errors import RowError
from dataflow.serving.classic.operations import (
    ROTATION_FILL,
    AutoContrast,
    Blur,
    CenterCrop,
    Enhance,
    Equalize,
    Flip,
    Grayscale,
    Invert,
    Posterize,
    Resize,
    Rotate,
    Scale,
    Sepia,
    Warmth,
    apply_operations,
)
from tests.serving.classic.measures import high_frequency, luminance, mean_saturation, noise, pixels


def test_enhance_brightness_moves_mean_luminance_both_ways():
    image = noise(low=40, high=216)
    assert luminance(Enhance("brightness", 1.3).apply(image)).mean() > luminance(image).mean() + 10
    assert luminance(Enhance("brightness", 0.7).apply(image)).mean() < luminance(image).mean() - 10


def test_enhance_contrast_and_saturation_move_their_statistic():
    image = noise(low=60, high=196)
    assert luminance(Enhance("contrast", 1.5).apply(image)).std() > luminance(image).std()
    assert mean_saturation(Enhance("saturation", 1.5).apply(image)) > mean_saturation(image)
    assert mean_saturation(Enhance("saturation", 0.5).apply(image)) < mean_saturation(image)


def test_enhance_rejects_unknown_quality_and_negative_factor():
    with pytest.raises(ValueError):
        Enhance("hue", 1.2)
    with pytest.raises(ValueError):
        Enhance("contrast", -0.1)


def test_warmth_scales_red_up_and_blue_down_exactly():
    image = Image.new("RGB", (2, 2), (100, 100, 100))
    assert Warmth(0.2).apply(image).getpixel((0, 0)) == (110, 100, 90)
    assert Warmth(-0.2).apply(image).getpixel((0, 0)) == (90, 100, 110)


def test_grayscale_has_equal_pixels():
    out = pixels(Grayscale().apply(noise()))
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_sepia_orders_channels_in_every_pixel():
    out = pixels(Sepia().apply(noise()))
    assert (out[..., 0] >= out[..., 1]).all() and (out[..., 1] >= out[..., 2]).all()


def test_invert_is_its_own_inverse():
    image = noise()
    assert np.array_equal(pixels(Invert().apply(image)), 255 - pixels(image))
    assert Invert().apply(Invert().apply(image)).tobytes() == image.tobytes()


def test_auto_contrast_stretches_to_full_range_and_equalize_spreads_values():
    image = noise(low=80, high=160)
    stretched = luminance(AutoContrast().apply(image))
    assert np.ptp(luminance(image)) < 100
    assert np.ptp(stretched) >= 250
    assert pixels(Equalize().apply(image)).std() > pixels(image).std()


def test_posterize_keeps_only_evenly_spaced_levels():
    out = pixels(Posterize(4).apply(noise()))
    assert set(np.unique(out)) <= {0, 85, 170, 255}
    with pytest.raises(ValueError):
        Posterize(1)


def test_blur_lowers_and_sharpen_raises_high_frequency_energy():
    image = noise(low=50, high=206)
    assert high_frequency(Blur(1.5).apply(image)) < high_frequency(image)
    smooth = Blur(1.0).apply(noise(32, 32))
    assert high_frequency(Enhance("sharpness", 2.0).apply(smooth)) > high_frequency(smooth)


def test_relative_blur_radius_follows_the_shorter_side():
    image = noise(40, 20)
    assert Blur(0.1, relative=True).apply(image).tobytes() == Blur(2.0).apply(image).tobytes()


@pytest.mark.parametrize("degrees, transpose", [
    (90, Image.Transpose.ROTATE_90), (-90, Image.Transpose.ROTATE_270),
    (180, Image.Transpose.ROTATE_180), (270, Image.Transpose.ROTATE_270), (450, Image.Transpose.ROTATE_90),
])
def test_quarter_turns_are_exact_transposes(degrees, transpose):
    image = noise()
    assert Rotate(degrees).apply(image).tobytes() == image.transpose(transpose).tobytes()


def test_free_rotation_expands_and_fills_corners_white():
    out = Rotate(45).apply(noise(20, 20))
    assert out.size[0] > 20 and out.size[1] > 20
    assert out.getpixel((0, 0)) == ROTATION_FILL
    assert Rotate(360).apply(noise()).tobytes() == noise().tobytes()


def test_flip_matches_imageops():
    image = noise()
    assert Flip(horizontal=True).apply(image).tobytes() == ImageOps.mirror(image).tobytes()
    assert Flip(horizontal=False).apply(image).tobytes() == ImageOps.flip(image).tobytes()


@pytest.mark.parametrize("size, ratio, expected", [
    ((64, 48), (16, 9), (64, 36)), ((48, 64), (1, 1), (48, 48)), ((30, 10), (1, 1), (10, 10)),
])
def test_center_crop_takes_the_largest_centred_box(size, ratio, expected):
    image = noise(*size)
    out = CenterCrop(*ratio).apply(image)
    assert out.size == expected
    left, top = (size[0] - expected[0]) // 2, (size[1] - expected[1]) // 2
    assert out.tobytes() == image.crop((left, top, left + expected[0], top + expected[1])).tobytes()


def test_resize_and_scale_sizes():
    image = noise(24, 16)
    assert Resize(10, 30).apply(image).size == (10, 30)
    assert Scale(0.5).apply(image).size == (12, 8)
    assert Scale(0.01).apply(image).size == (1, 1)


def test_resize_refuses_outputs_over_the_pixel_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(RowError, match="pixel limit"):
        Scale(10).apply(noise(24, 16))


def test_apply_operations_returns_rgb_and_leaves_input_untouched():
    image = noise().convert("L")
    before = image.tobytes()
    out = apply_operations([Invert(), Flip(horizontal=True)], image)
    assert out.mode == "RGB" and image.tobytes() == before
