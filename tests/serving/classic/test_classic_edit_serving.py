"""ClassicEditServing end to end: instructions in, edited pixels (or a row error) out."""

import numpy as np
import pytest
from PIL import Image, ImageOps

from dataflow.core.errors import InputError, RowError
from dataflow.core.request import EditRequest
from dataflow.core.serving import ImageEditServing
from dataflow.serving.classic.grammar import GRAMMAR_VERSION
from dataflow.serving.classic.serving import ClassicEditServing
from tests.serving.classic.measures import (
    high_frequency,
    luminance,
    mean_saturation,
    noise,
    pixels,
    red_blue_ratio,
)


def edit(instruction: str, image: Image.Image) -> Image.Image:
    [result] = ClassicEditServing().edit([EditRequest("row", image, instruction)])
    assert result.ok, result.error
    [edited] = result.images
    assert edited.mode == "RGB"
    return edited


def error_of(instruction: str) -> str:
    [result] = ClassicEditServing().edit([EditRequest("row", noise(), instruction)])
    assert not result.ok and result.images == []
    return result.error


MIDTONES = noise(low=50, high=206)


def test_is_an_image_edit_serving_with_a_grammar_fingerprint():
    serving = ClassicEditServing(image_io="io", batch_size=3)
    assert isinstance(serving, ImageEditServing)
    assert (serving.image_io, serving.batch_size) == ("io", 3)
    assert serving.fingerprint() == {"serving": "classic", "version": GRAMMAR_VERSION}
    with pytest.raises(InputError):
        ClassicEditServing(batch_size=0)


def test_brighter_and_darker_move_mean_luminance():
    base = luminance(MIDTONES).mean()
    assert luminance(edit("Make it brighter.", MIDTONES)).mean() > base + 5
    assert luminance(edit("make the image darker", MIDTONES)).mean() < base - 5


def test_grayscale_gives_equal_channels():
    for instruction in ("make it black and white", "convert to grayscale"):
        values = pixels(edit(instruction, noise()))
        assert np.array_equal(values[..., 0], values[..., 1]) and np.array_equal(values[..., 1], values[..., 2])


def test_rotate_90_clockwise_equals_pillow_rotate_270():
    image = noise()
    assert edit("Rotate the image 90 degrees clockwise", image).tobytes() == (
        image.transpose(Image.Transpose.ROTATE_270).tobytes()
    )
    assert edit("rotate it 90 degrees to the left", image).tobytes() == (
        image.transpose(Image.Transpose.ROTATE_90).tobytes()
    )


def test_more_vibrant_and_more_saturated_raise_mean_saturation():
    for instruction in ("make it more vibrant", "more saturated"):
        assert mean_saturation(edit(instruction, MIDTONES)) > mean_saturation(MIDTONES)


def test_contrast_up_raises_luminance_spread():
    assert luminance(edit("increase the contrast", MIDTONES)).std() > luminance(MIDTONES).std()
    assert luminance(edit("reduce the contrast", MIDTONES)).std() < luminance(MIDTONES).std()


def test_sepia_has_red_over_green_over_blue_on_average():
    means = pixels(edit("apply a sepia filter", noise())).mean(axis=(0, 1))
    assert means[0] >= means[1] >= means[2]


def test_invert_twice_gives_back_the_original():
    image = noise()
    assert edit("invert the colors and invert it again", image).tobytes() == image.tobytes()


def test_flip_horizontally_equals_imageops_mirror():
    image = noise()
    assert edit("flip it horizontally", image).tobytes() == ImageOps.mirror(image).tobytes()


def test_crop_to_16_9_gives_that_aspect_ratio():
    width, height = edit("crop to 16:9", noise(64, 48)).size
    assert (width, height) == (64, 36)


def test_scale_by_half_halves_each_side():
    assert edit("scale by 50%", noise(24, 16)).size == (12, 8)
    assert edit("make it half the size", noise(24, 16)).size == (12, 8)


def test_blur_lowers_and_sharpen_raises_high_frequency_energy():
    image = noise(32, 32, low=50, high=206)
    assert high_frequency(edit("blur by 1 pixel", image)) < high_frequency(image)
    smooth = image.resize((8, 8)).resize((32, 32), Image.Resampling.BILINEAR)
    assert high_frequency(edit("sharpen", smooth)) > high_frequency(smooth)


def test_warmer_raises_and_cooler_lowers_red_blue_ratio():
    assert red_blue_ratio(edit("make it warmer", MIDTONES)) > red_blue_ratio(MIDTONES)
    assert red_blue_ratio(edit("make it cooler", MIDTONES)) < red_blue_ratio(MIDTONES)


def test_posterize_reduces_distinct_values():
    image = noise()
    assert len(np.unique(pixels(edit("posterize", image)))) < len(np.unique(pixels(image)))


def test_auto_contrast_widens_luminance_range():
    image = noise(low=90, high=150)
    assert np.ptp(luminance(edit("auto contrast", image))) > np.ptp(luminance(image))


def test_explicit_amount_changes_the_result():
    base = luminance(MIDTONES).mean()
    slight = luminance(edit("make it a little brighter", MIDTONES)).mean()
    by_30 = luminance(edit("make it brighter by 30%", MIDTONES)).mean()
    strong = luminance(edit("make it a lot brighter", MIDTONES)).mean()
    assert base < slight < by_30 < strong


def test_compound_order_matters():
    assert edit("crop to a square and rotate 90 degrees", noise(24, 16)).size == (16, 16)
    assert edit("crop to 16:9 and then rotate 90 degrees", noise(32, 24)).size == (18, 32)
    assert edit("rotate 90 degrees, then crop to 16:9", noise(32, 24)).size == (24, 14)


def test_compound_applies_every_clause():
    image = noise()
    expected = ImageOps.flip(image)
    result = edit("Make it brighter and flip it vertically", image)
    assert luminance(result).mean() > luminance(expected).mean()
    assert np.corrcoef(luminance(result).ravel(), luminance(expected).ravel())[0, 1] > 0.95


def test_object_level_edits_are_row_errors_naming_the_generative_backend():
    for instruction in ("Change the vase to red.", "Complete the shadowed part into a generic person's portrait.",
                        "make the sky brighter"):
        assert "--backend flux-kontext" in error_of(instruction)


def test_one_unknown_clause_makes_the_whole_row_an_error():
    assert "clause 'add a hat'" in error_of("make it brighter and add a hat")


def test_errors_stay_in_their_row():
    requests = [
        EditRequest("a", noise(), "flip horizontally"),
        EditRequest("b", noise(), "Change the vase to red."),
        EditRequest("c", noise(), "rotate 180 degrees", num_images=3),
    ]
    ok, failed, several = ClassicEditServing().edit(requests)
    assert ok.ok and len(ok.images) == 1
    assert not failed.ok and failed.images == []
    assert len(several.images) == 3
    assert len({image.tobytes() for image in several.images}) == 1
    assert len({id(image) for image in several.images}) == 3


def test_input_image_is_not_modified_and_non_rgb_input_gives_rgb():
    image = noise().convert("L")
    before = image.tobytes()
    assert edit("invert", image).mode == "RGB"
    assert image.tobytes() == before


def test_check_instruction_raises_only_for_unsupported_instructions():
    serving = ClassicEditServing()
    serving.check_instruction("make it brighter and crop to a square")
    with pytest.raises(RowError, match="generative backend"):
        serving.check_instruction("Change the vase to red.")
