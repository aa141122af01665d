"""The bytes a reference image is sent as: its own file when the service takes it as it is, else a re-encoding.

A photo stays what it was: a 2.5 MB JPEG goes as those 2.5 MB, where a PNG of the decoded pixels would weigh six
to eight times more (and a Gemini request, base64-encoded, a third more again). A file is re-encoded only when
sending it as it is would show the service other pixels than the local backends see, or a format it does not
take:

- an EXIF orientation: the decoded image is rotated; a JPEG is re-encoded as JPEG with its own quantisation
  tables and chroma subsampling (one more generation at the same quality, about the same size), anything else
  as PNG;
- transparency, a palette, CMYK or another mode than RGB or grey: the decoded RGB image (transparency composited
  onto white, as every backend reads it) goes as PNG;
- a format other than JPEG, PNG or WebP (TIFF, BMP, GIF ...), or several frames: PNG;
- no file at all (an ``EditRequest`` made in Python from a PIL image): PNG, as before.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Optional

# What both OpenAI's image edits (png, webp, jpg) and Gemini (PNG, JPEG, WebP, HEIC, HEIF) take as they are.
SENT_AS_IS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
_ORIENTATION = 0x0112
_PLAIN_MODES = ("RGB", "L")


@dataclass(frozen=True)
class Upload:
    """One reference image as sent: its bytes, MIME type, and whether they are the source file's own."""

    data: bytes
    mime: str
    as_is: bool = False

    def filename(self, index: int) -> str:
        return f"image_{index}.{EXTENSIONS.get(self.mime, 'png')}"


def upload_of(image: Any, source: Optional[bytes] = None) -> Upload:
    """The bytes to send for the decoded ``image``, whose file (when known) is ``source``."""
    from PIL import Image

    if source:
        try:
            with Image.open(io.BytesIO(source)) as opened:
                kind = _sendable(opened, source, image.size)
                if kind == "as_is":
                    return Upload(source, SENT_AS_IS[opened.format], as_is=True)
                if kind == "jpeg":
                    return Upload(_jpeg_like(image, opened), "image/jpeg")
        except (OSError, ValueError, SyntaxError):
            pass  # the decoder read it for the row; whatever Pillow cannot parse again goes as PNG
    return Upload(_png(image), "image/png")


def _sendable(opened: Any, source: bytes, size: tuple) -> str:
    """"as_is" when the file shows the service exactly the decoded pixels in a format it takes; "jpeg" for a
    plain JPEG that only needs its orientation applied; "png" otherwise."""
    if opened.format not in SENT_AS_IS or getattr(opened, "n_frames", 1) != 1:
        return "png"
    if opened.mode not in _PLAIN_MODES or "transparency" in opened.info:
        return "png"
    if _rotated(opened, source) or opened.size != tuple(size):
        return "jpeg" if opened.format == "JPEG" else "png"
    return "as_is"


def _rotated(opened: Any, source: bytes) -> bool:
    """Whether the decoder rotates this file by its EXIF orientation. A PNG may keep its EXIF chunk after the
    pixels, where only a full decode finds it, so a PNG holding any EXIF chunk counts as rotated."""
    if opened.format == "PNG":
        return b"eXIf" in source
    try:
        return opened.getexif().get(_ORIENTATION, 1) not in (1, None)
    except Exception:  # a broken EXIF block: the decoder keeps the image upright, so must the upload
        return False


def _jpeg_like(image: Any, source: Any) -> bytes:
    """``image`` as JPEG with ``source``'s quantisation tables and subsampling (Pillow's ``quality="keep"``)."""
    from PIL import JpegImagePlugin

    buffer = io.BytesIO()
    options = {"qtables": source.quantization} if getattr(source, "quantization", None) else {"quality": 95}
    subsampling = JpegImagePlugin.get_sampling(source)
    if subsampling != -1:
        options["subsampling"] = subsampling
    image.convert(source.mode).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def _png(image: Any) -> bytes:
    from dataflow.io.image_io import encode_png

    return encode_png(image)
