import os

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import RowError
from dataflow.io import ImageIO
from tests.conftest import write_image


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "bmp", "tiff"])
def test_common_formats_decode_to_rgb_at_their_size(tmp_path, ext):
    path = write_image(tmp_path / f"a.{ext}", 40, 30)
    image = ImageIO().read(path)
    assert image.mode == "RGB" and image.size == (40, 30)


def test_exif_orientation_is_applied_when_reading_and_probing(tmp_path):
    pixels = np.zeros((30, 60, 3), dtype=np.uint8)
    pixels[:, :30] = 255  # left half white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: displays rotated 90 degrees clockwise
    path = str(tmp_path / "rotated.jpg")
    image.save(path, exif=exif, quality=95)
    io = ImageIO()
    upright = io.read(path)
    assert upright.size == (30, 60) == io.probe(path)
    top, bottom = np.asarray(upright)[:20].mean(), np.asarray(upright)[-20:].mean()
    assert top > 200 and bottom < 50  # the white half is now on top


def test_transparency_becomes_white_not_black(tmp_path):
    path = str(tmp_path / "clear.png")
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert np.asarray(ImageIO().read(path)).min() == 255


@pytest.mark.parametrize("make, fragment", [
    (lambda p: None, "not found"),
    (lambda p: os.mkdir(p), "is a directory"),
    (lambda p: open(p, "wb").close(), "empty"),
    (lambda p: open(p, "wb").write(b"this is not an image at all"), "not a readable image"),
])
def test_unreadable_files_raise_row_errors_naming_the_file(tmp_path, make, fragment):
    path = str(tmp_path / "bad.png")
    make(path)
    with pytest.raises(RowError, match=fragment) as info:
        ImageIO().read(path)
    assert "bad.png" in str(info.value)


def test_a_truncated_image_is_a_row_error(tmp_path):
    path = write_image(tmp_path / "t.png", 64, 64)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(RowError, match="t.png"):
        ImageIO().read(path)


def test_decompression_bombs_are_refused_under_pillows_limit(tmp_path, monkeypatch):
    path = write_image(tmp_path / "big.png", 100, 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px is over twice the limit
    with pytest.raises(RowError, match="decompression bomb"):
        ImageIO().read(path)


def test_outputs_are_written_as_sample_folders_of_pngs(tmp_path):
    io = ImageIO(save_path=str(tmp_path / "out"))
    images = [Image.new("RGB", (5, 4), (255, 0, 0)), Image.new("RGB", (5, 4), (0, 0, 255))]
    paths = io.write(3, images)
    assert paths == [str(tmp_path / "out" / "sample_3" / f"sample_3_{k}.png") for k in (0, 1)]
    assert Image.open(paths[1]).getpixel((0, 0)) == (0, 0, 255)
    assert not [n for n in os.listdir(tmp_path / "out" / "sample_3") if n.endswith(".tmp")]


def test_relative_save_paths_give_relative_output_paths():
    assert ImageIO(save_path="./cache_local/x").output_path(0, 0) == "./cache_local/x/sample_0/sample_0_0.png"


GRADIENT = np.tile(np.arange(256, dtype=np.uint16), (8, 1))  # 8-bit values 0..255, left to right


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_a_16_bit_gradient_keeps_its_gradient(tmp_path, ext):
    path = tmp_path / f"gradient16.{ext}"
    Image.fromarray(GRADIENT * 257).save(path)  # 0..65535: a full-range 16-bit grayscale ramp
    assert Image.open(path).mode == "I;16"
    pixels = np.asarray(ImageIO().read(str(path)))
    assert pixels.shape == (8, 256, 3) and (pixels == GRADIENT[..., None]).all()


@pytest.mark.parametrize("values, expected", [
    (GRADIENT.astype(np.int32) * 257, GRADIENT),  # 16-bit data held as 32-bit integers
    (GRADIENT.astype(np.int32) * 100_000 - 5, GRADIENT),  # a wider range: stretched over its own extent
    (GRADIENT.astype(np.float32) / 255, GRADIENT),  # floats in 0..1
    (GRADIENT.astype(np.float32) * 4 - 100, GRADIENT),  # floats in any other range: stretched
])
def test_32_bit_integer_and_float_images_are_scaled_to_8_bits(tmp_path, values, expected):
    path = tmp_path / "deep.tif"
    Image.fromarray(values).save(path)
    pixels = np.asarray(ImageIO().read(str(path)))
    assert np.abs(pixels[..., 0].astype(int) - expected).max() <= 1 and (pixels[..., 0] == pixels[..., 2]).all()


def test_png_checks_find_a_cut_or_a_flipped_byte_and_pass_a_whole_png(tmp_path):
    from dataflow.io.image_io import png_file_is_whole, png_problem

    (path,) = ImageIO(save_path=str(tmp_path)).write(0, [Image.fromarray(np.full((64, 64, 3), 7, np.uint8))])
    data = open(path, "rb").read()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    assert png_problem(data) is None and png_file_is_whole(path)
    assert "fails its CRC" in png_problem(bytes(flipped))
    assert "truncated PNG" in png_problem(data[:-5])
    with open(path, "wb") as handle:
        handle.write(data[:-5])
    assert not png_file_is_whole(path)
