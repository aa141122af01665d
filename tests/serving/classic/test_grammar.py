"""Reading instructions: phrasings, amounts, order, and refusing anything that is not a global edit."""

import pytest

from dataflow.core.errors import RowError
from dataflow.serving.classic.grammar import (
    DEFAULT_STRENGTH,
    MAX_INSTRUCTION_CHARS,
    SLIGHT_STRENGTH,
    STRONG_STRENGTH,
    normalize,
    parse,
)
from dataflow.serving.classic.operations import (
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
)

DEFAULT_BLUR = Blur(DEFAULT_STRENGTH / 25, relative=True)


@pytest.mark.parametrize("instruction, expected", [
    # tone
    ("Make it brighter.", Enhance("brightness", 1 + DEFAULT_STRENGTH)),
    ("Please brighten the image", Enhance("brightness", 1 + DEFAULT_STRENGTH)),
    ("increase the image's exposure", Enhance("brightness", 1 + DEFAULT_STRENGTH)),
    ("darken the photo", Enhance("brightness", 1 - DEFAULT_STRENGTH)),
    ("make the picture less bright", Enhance("brightness", 1 - DEFAULT_STRENGTH)),
    ("Increase the contrast", Enhance("contrast", 1 + DEFAULT_STRENGTH)),
    ("lower contrast", Enhance("contrast", 1 - DEFAULT_STRENGTH)),
    ("make it more vibrant", Enhance("saturation", 1 + DEFAULT_STRENGTH)),
    ("make the colors more saturated", Enhance("saturation", 1 + DEFAULT_STRENGTH)),
    ("boost the vibrance", Enhance("saturation", 1 + DEFAULT_STRENGTH)),
    ("desaturate", Enhance("saturation", 1 - DEFAULT_STRENGTH)),
    ("make it black and white", Grayscale()),
    ("Convert the photo to grayscale", Grayscale()),
    ("B&W", Grayscale()),
    ("remove the colour", Grayscale()),
    ("apply a sepia filter", Sepia()),
    ("invert the colors", Invert()),
    ("make it negative", Invert()),
    ("make it warmer", Warmth(DEFAULT_STRENGTH)),
    ("Make the image look warmer", Warmth(DEFAULT_STRENGTH)),
    ("add warm tones", Warmth(DEFAULT_STRENGTH)),
    ("cool it down", Warmth(-DEFAULT_STRENGTH)),
    ("auto-contrast", AutoContrast()),
    ("equalize the histogram", Equalize()),
    ("posterize", Posterize(4)),
    ("posterize to 3 bits", Posterize(8)),
    ("posterize to 6 levels", Posterize(6)),
    # detail
    ("blur", DEFAULT_BLUR),
    ("soften the image", DEFAULT_BLUR),
    ("apply a gaussian blur of 3 pixels", Blur(3.0)),
    ("make it less sharp", DEFAULT_BLUR),
    ("sharpen", Enhance("sharpness", 1 + 4 * DEFAULT_STRENGTH)),
    ("make the details crisper", Enhance("sharpness", 1 + 4 * DEFAULT_STRENGTH)),
    # geometry
    ("Rotate the image 90 degrees clockwise", Rotate(-90)),
    ("rotate 90° counter-clockwise", Rotate(90)),
    ("rotate it to the left", Rotate(90)),
    ("rotate right", Rotate(-90)),
    ("rotate clockwise by 180 degrees", Rotate(-180)),
    ("rotate by 30 degrees", Rotate(30)),
    ("rotate -15 degrees", Rotate(-15)),
    ("turn it upside down", Rotate(180)),
    ("flip horizontally", Flip(horizontal=True)),
    ("mirror the image", Flip(horizontal=True)),
    ("flip it upside down", Flip(horizontal=False)),
    ("apply a vertical flip", Flip(horizontal=False)),
    ("crop to 16:9", CenterCrop(16, 9)),
    ("crop it to a 4:3 aspect ratio", CenterCrop(4, 3)),
    ("crop to a square", CenterCrop(1, 1)),
    ("center crop to 1:1", CenterCrop(1, 1)),
    ("square crop", CenterCrop(1, 1)),
    ("resize to 512x384", Resize(512, 384)),
    ("resize the image to 512 x 384 pixels", Resize(512, 384)),
    ("scale by 50%", Scale(0.5)),
    ("scale to 200%", Scale(2.0)),
    ("scale by 0.5", Scale(0.5)),
    ("make it half the size", Scale(0.5)),
    ("halve the resolution", Scale(0.5)),
    ("double the size", Scale(2.0)),
    ("downscale by a factor of 2", Scale(0.5)),
    ("upscale 2x", Scale(2.0)),
    ("shrink by 25%", Scale(0.75)),
    ("enlarge by 25%", Scale(1.25)),
])
def test_single_edits(instruction, expected):
    assert parse(instruction) == [expected]


@pytest.mark.parametrize("instruction, factor", [
    ("make it slightly brighter", 1 + SLIGHT_STRENGTH),
    ("make it a little bit brighter", 1 + SLIGHT_STRENGTH),
    ("make it a lot brighter", 1 + STRONG_STRENGTH),
    ("make it much brighter", 1 + STRONG_STRENGTH),
    ("increase brightness by 30%", 1.3),
    ("make it 30% brighter", 1.3),
    ("make it darker by 30 percent", 0.7),
])
def test_amounts(instruction, factor):
    [operation] = parse(instruction)
    assert operation.quality == "brightness" and operation.factor == pytest.approx(factor)


@pytest.mark.parametrize("instruction, expected", [
    ("make it brighter and flip it vertically", [Enhance("brightness", 1.25), Flip(horizontal=False)]),
    ("Crop to a square, then rotate 90 degrees.", [CenterCrop(1, 1), Rotate(90)]),
    ("first rotate 90 degrees; and then crop to a square", [Rotate(90), CenterCrop(1, 1)]),
    ("Make it black and white. Then sharpen it!", [Grayscale(), Enhance("sharpness", 2.0)]),
    ("increase brightness and contrast", [Enhance("brightness", 1.25), Enhance("contrast", 1.25)]),
    ("reduce saturation by 20% and contrast by 10%", [Enhance("saturation", 0.8), Enhance("contrast", 0.9)]),
])
def test_compound_instructions_keep_their_order(instruction, expected):
    assert parse(instruction) == expected


@pytest.mark.parametrize("instruction", [
    "Change the vase to red.",
    "Complete the shadowed part into a generic person's portrait.",
    "make the sky brighter",
    "blur the background",
    "brighten the shadows",
    "make the cat black and white",
    "convert the car to grayscale",
    "make it red",
    "remove the background",
    "enhance",
    "make it look like a painting",
    "reduce the blur",
])
def test_object_level_and_unknown_edits_ask_for_a_generative_backend(instruction):
    with pytest.raises(RowError, match=r"not a global edit the classic backend can do exactly.*--backend flux-kontext"):
        parse(instruction)


def test_one_unknown_clause_fails_the_whole_instruction_and_is_named():
    with pytest.raises(RowError, match=r"clause 'add a hat' of 'make it brighter, add a hat and flip horizontally'"):
        parse("Make it brighter, add a hat and flip horizontally")


@pytest.mark.parametrize("instruction, named", [
    ("make it brighter 并且很多", "'并且很多' in 'make it brighter 并且很多'"),
    ("rotate 90 degrees, puis le rendre plus clair", None),  # plain ASCII: an unknown clause, named as such
    ("flip horizontally and make it más brillante", "'más' in"),
    ("把图片变成黑白", "cannot read '把图片变成黑白'"),
])
def test_words_in_another_script_fail_the_whole_instruction_instead_of_being_dropped(instruction, named):
    with pytest.raises(RowError) as caught:
        parse(instruction)
    if named is None:
        assert "not a global edit" in str(caught.value)
    else:
        assert named in str(caught.value) and "--backend flux-kontext, or --backend api" in str(caught.value)


def test_ascii_signs_around_the_words_are_still_read():
    assert parse("Rotate 90° clockwise") == parse("rotate 90 degrees clockwise")


@pytest.mark.parametrize("instruction, message", [
    ("flip", "flip takes a direction"),
    ("flip along the vertical axis", "flip takes a direction"),
    ("rotate", "rotate takes an angle"),
    ("crop to 512x384", "crop takes 'a square' or an aspect ratio"),
    ("posterize to many levels", "posterize takes"),
    ("scale", "say how much to scale"),
    ("make it brighter, a little", "gives an amount but no edit"),
    ("contrast", "names contrast but not whether to raise or lower it"),
    ("make it sepia slightly", r"sepia does not take an amount \('slightly'\)"),
    ("brighten slightly by 30%", "more than one amount"),
    ("increase brightness to 50%", "with 'by N%'"),
    ("make it darker by 150%", "more than 100%"),
    ("sharpen by 3 pixels", "does not take a pixel amount"),
    ("posterize to 9 bits", "1 to 8 bits"),
    ("crop to 0:1", "two positive numbers"),
    ("", "empty"),
    ("please.", "does not ask for any edit"),
])
def test_precise_errors(instruction, message):
    with pytest.raises(RowError, match=message):
        parse(instruction)


@pytest.mark.parametrize("instruction", ["把图片变成黑白", "Сделай фото чёрно-белым", "please, 把图片变成黑白."])
def test_an_instruction_in_words_the_grammar_cannot_read_points_to_the_generative_backends(instruction):
    with pytest.raises(RowError) as info:
        parse(instruction)
    message = str(info.value)
    assert "does not ask for any edit" not in message and instruction in message
    assert "English phrases" in message and "'convert to grayscale'" in message
    assert "--backend flux-kontext" in message and "--backend api" in message
    parse(message.split("such as '", 1)[1].split("'", 1)[0])  # the example it gives is one the grammar reads


def test_a_geometry_verb_that_contradicts_its_factor_is_refused():
    with pytest.raises(RowError, match="'upscale' contradicts a scale factor of 0.5"):
        parse("upscale to 50%")


def test_normalize_unifies_spellings():
    assert normalize("Black & White, 512 × 384, 16/9, counter-clockwise, rotate -30°!") == (
        "black_and_white, 512x384, 16:9, counter clockwise, rotate -30\u00b0!"
    )


def test_parsing_ignores_case_politeness_and_punctuation():
    assert parse("PLEASE, could you FLIP the photo horizontally?!") == [Flip(horizontal=True)]


@pytest.mark.parametrize("instruction", [
    "less bright", "contrast down", "more contrasty", "saturate", "muted", "cooler white balance", "reduce warmth",
    "gray", "monochrome", "sepia tone", "negative", "autocontrast", "auto levels", "normalize",
    "histogram equalization", "posterize to 8 levels", "add blur", "blurry", "reduce sharpness", "blur 5 px",
    "blur with a radius of 5", "increase clarity", "sharpen the details", "rotate upside down", "flip left to right",
    "horizontal flip", "mirror image", "flip top to bottom", "crop to 1:1", "resize by 50%", "quarter size",
    "twice as big", "shrink by half", "scale down by half", "warm filter",
])
def test_documented_phrases_parse(instruction):
    assert len(parse(instruction)) == 1


def test_an_instruction_past_the_limit_fails_at_once_with_a_short_message():
    """A 10 MB instruction (600,000 clauses) used to pin a core for over 12 minutes."""
    instruction = "make it brighter, " * 600_000
    with pytest.raises(RowError) as error:
        parse(instruction)
    message = str(error.value)
    assert f"{len(instruction):,} characters long" in message and f"at most {MAX_INSTRUCTION_CHARS:,}" in message
    assert len(message) < 300


def test_a_failing_clause_of_a_long_instruction_quotes_a_bounded_excerpt():
    """Each clause's message used to quote the whole instruction: parsing cost grew with the square of its
    length, and the row's error held the whole text."""
    instruction = "make it brighter, " * 5_000 + "change the vase to red"
    with pytest.raises(RowError) as error:
        parse(instruction, max_chars=None)
    message = str(error.value)
    assert "clause 'change the vase to red'" in message and "generative backend" in message
    assert f"({len(normalize(instruction)):,} characters)" in message
    assert len(message) < 600


@pytest.mark.parametrize("instruction", ["please. " * 2_000, "画" * 5_000, "make it brighter " + "画" * 5_000])
def test_messages_about_long_instructions_are_bounded(instruction):
    with pytest.raises(RowError) as error:
        parse(instruction)
    assert len(str(error.value)) < 800 and "characters)" in str(error.value)
