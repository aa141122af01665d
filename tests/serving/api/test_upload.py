"""The bytes a reference image is sent as: the file itself when the service takes it, a re-encoding otherwise."""

import io

import numpy as np
import pytest
from PIL import Image

from dataflow.io import ImageIO
from dataflow.serving.api.upload import upload_of
from tests.serving.api.photo import photo, write_photo_jpeg


def saved(image, fmt, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("fmt, mime, ext", [("JPEG", "image/jpeg", "jpg"), ("PNG", "image/png", "png"),
                                           ("WEBP", "image/webp", "webp")])
def test_a_file_the_service_takes_goes_as_it_is(tmp_path, fmt, mime, ext):
    path = tmp_path / f"in.{fmt.lower()}"
    path.write_bytes(saved(photo(64, 48), fmt))
    reader = ImageIO()
    upload = upload_of(reader.read(str(path)), reader.read_bytes(str(path)))
    assert upload.data == path.read_bytes() and upload.mime == mime and upload.as_is
    assert upload.filename(2) == f"image_2.{ext}"


def test_an_exif_rotated_jpeg_is_rotated_and_stays_a_jpeg_of_about_its_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = write_photo_jpeg(tmp_path / "rotated.jpg", 640, 480, exif=exif)
    reader = ImageIO()
    upright = reader.read(path)
    upload = upload_of(upright, reader.read_bytes(path))
    assert upload.mime == "image/jpeg" and not upload.as_is
    sent = decoded(upload.data)
    assert sent.shape == (640, 480, 3)  # the displayed orientation, not the stored one
    assert np.abs(sent.astype(int) - np.asarray(upright, dtype=int)).mean() < 3  # one more generation, same look
    assert len(upload.data) < 1.5 * len(open(path, "rb").read())
    with Image.open(io.BytesIO(upload.data)) as image:
        assert image.getexif().get(0x0112) is None  # nothing left for the service to rotate again


def test_transparency_palettes_and_other_formats_go_as_png_of_the_decoded_pixels(tmp_path):
    reader = ImageIO()
    rgba = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 4), dtype=np.uint8))
    cases = {"alpha.png": saved(rgba, "PNG"), "pic.bmp": saved(photo(16, 16), "BMP"),
             "pic.tiff": saved(photo(16, 16), "TIFF"), "cmyk.jpg": saved(photo(16, 16).convert("CMYK"), "JPEG"),
             "palette.png": saved(photo(16, 16).convert("P"), "PNG")}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        image = reader.read(str(tmp_path / name))
        upload = upload_of(image, data)
        assert upload.mime == "image/png" and not upload.as_is, name
        assert np.array_equal(decoded(upload.data), np.asarray(image)), name  # what every backend sees


def test_a_png_with_an_exif_chunk_is_re_encoded_from_the_decoded_image(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 3  # upside down: the size does not give it away
    data = saved(photo(20, 10), "PNG", exif=exif)
    (tmp_path / "turned.png").write_bytes(data)
    image = ImageIO().read(str(tmp_path / "turned.png"))
    upload = upload_of(image, data)
    assert not upload.as_is and np.array_equal(decoded(upload.data), np.asarray(image))


def test_without_a_file_the_image_goes_as_png():
    image = photo(12, 8)
    upload = upload_of(image)
    assert upload.mime == "image/png" and np.array_equal(decoded(upload.data), np.asarray(image))
