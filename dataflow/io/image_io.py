"""Reading reference images safely and saving edited images deterministically."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import stat
import threading
import warnings
import zlib
from typing import BinaryIO, Iterator, Optional, Sequence, Union

import numpy as np
import PIL
from PIL import Image, ImageOps, UnidentifiedImageError

from dataflow.core.errors import RowError
from dataflow.io.atomic import atomic_write_bytes
from dataflow.io.sources import embedded_ref, read_embedded
from dataflow.logger import get_logger

logger = get_logger()

# EXIF orientations 5-8 rotate by 90 or 270 degrees, so the displayed width and height are swapped.
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION_TAG = 0x0112

# Open without blocking: opening a FIFO for reading would otherwise wait for a writer forever.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class ImageIO:
    """Decode input images to RGB and write outputs as ``{save_path}/sample_{i}/sample_{i}_{k}.png``.

    Args:
        save_path: folder that receives the edited images. Paths returned by ``write`` start with it as given,
            so a relative ``save_path`` gives relative output paths.

    Decoding applies the EXIF orientation, composites transparency onto white, and keeps Pillow's
    decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``). Every failure is a ``RowError`` naming the file, and
    the warnings Pillow raises while decoding a file are that file's, not the process's: see ``read``.
    """

    def __init__(self, save_path: str = "./cache_local/images"):
        self.save_path = save_path

    # -- reading -----------------------------------------------------------------------------------------
    def read(self, path: Union[str, Sequence[str]], warnings: Optional[list] = None):
        """Decode one path to an RGB image, or a list of paths to a list of images.

        Each Python warning Pillow raises meanwhile is appended to ``warnings`` (when given) as one line,
        ``"{path}: {Category}: {message}"``, and logged at DEBUG level; none is printed to stderr. Warnings
        from C libraries (libtiff prints some errors itself) do not go through Python and still reach stderr.
        """
        if isinstance(path, (list, tuple)):
            return [self.read(p, warnings) for p in path]
        with _warnings_of(path, warnings), _decode_errors(path), _open_image(path) as img:
            return _to_rgb(ImageOps.exif_transpose(img))

    def read_bytes(self, path: str) -> bytes:
        """The file's bytes as stored (an embedded image's too), for a backend that sends files as they are;
        a ``RowError`` names a file that cannot be read."""
        with _decode_errors(path), _open_file(path) as handle:
            return handle.read()

    def probe(self, path: str, warnings: Optional[list] = None) -> tuple[int, int]:
        """The displayed (width, height) of ``path`` after EXIF orientation, reading only the header.

        ``warnings`` collects Pillow's warnings as in ``read``.
        """
        with _warnings_of(path, warnings), _decode_errors(path), _open_image(path) as img:
            width, height = img.size
            if _orientation(img) in _SWAPPING_ORIENTATIONS:
                width, height = height, width
            return width, height

    # -- writing -----------------------------------------------------------------------------------------
    def output_path(self, sample_index: int, k: int, suffix: str = "") -> str:
        """Where output ``k`` of row ``sample_index`` is saved (``suffix`` tells apart rows sharing an index)."""
        name = f"sample_{sample_index}{suffix}"
        return os.path.join(self.save_path, name, f"{name}_{k}.png")

    def write(self, sample_index: int, images: Sequence[Image.Image], suffix: str = "") -> list[str]:
        """Save ``images`` as PNG files for row ``sample_index``, atomically; return their paths."""
        paths = []
        for k, image in enumerate(images):
            path = self.output_path(sample_index, k, suffix)
            atomic_write_bytes(path, encode_png(image))
            paths.append(path)
        return paths


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: no data, then its CRC


def png_file_is_whole(path: str) -> bool:
    """True when ``path`` starts with the PNG signature and ends with the IEND chunk: two small reads, no decode.

    This is the check a rerun makes before reusing an earlier run's output image: it catches the usual damage
    (a file cut short by a full disk, a copy or a sync that stopped) without reading a million images in full.
    Bytes damaged in the middle of a whole-length file are found where the bytes are read anyway: an export
    checks every chunk's CRC (``png_problem``).
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        return (size >= len(PNG_SIGNATURE) + len(_PNG_END) and os.pread(fd, len(PNG_SIGNATURE), 0) == PNG_SIGNATURE
                and os.pread(fd, len(_PNG_END), size - len(_PNG_END)) == _PNG_END)
    except OSError:
        return False
    finally:
        os.close(fd)


def png_problem(data: bytes) -> Optional[str]:
    """What is wrong with PNG bytes, in words (a bad signature, a chunk cut short or with a wrong CRC, no IEND
    chunk at the end), or None for a whole PNG. Reads every chunk's CRC, not the pixels: a fraction of a decode."""
    if not data.startswith(PNG_SIGNATURE):
        return "not a PNG file (no PNG signature)"
    position = len(PNG_SIGNATURE)
    while position + 12 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        end = position + 12 + length
        if end > len(data):
            return f"truncated PNG: the {kind.decode('latin-1')!r} chunk at byte {position} is cut short"
        if zlib.crc32(data[position + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            return f"damaged PNG: the {kind.decode('latin-1')!r} chunk at byte {position} fails its CRC"
        if kind == b"IEND":
            return None
        position = end
    return "truncated PNG: it ends before its IEND chunk"


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of ``image``; Pillow writes no timestamp, so equal pixels give equal files."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- opening and decoding ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _open_image(path: str) -> Iterator[Image.Image]:
    """Pillow's image of ``path``, which must be a non-empty regular file; closed on exit."""
    with _open_file(path) as handle, Image.open(handle) as img:
        yield img


def _open_file(path: str) -> BinaryIO:
    """``path`` opened for binary reading, or a ``RowError`` saying why it is not an image file one can read.

    A reference to an image embedded in a dataset shard (``dataflow.io.sources``) opens as its bytes.
    """
    if not isinstance(path, str) or not path:
        raise RowError(f"image path must be a non-empty string, got {path!r}")
    ref = embedded_ref(path)
    if ref is not None:
        data = read_embedded(ref)
        if not data:
            raise RowError(f"image is empty: {path}")
        return io.BytesIO(data)
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        raise RowError(_unopenable_message(path, exc)) from exc
    info = os.fstat(fd)
    problem = None
    if stat.S_ISDIR(info.st_mode):
        problem = f"image path is a directory, not a file: {path}"
    elif not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "a special file")
        problem = f"image path {path} is {kind}, not a regular file"
    elif info.st_size == 0:
        problem = f"image file is empty: {path}"
    if problem:
        os.close(fd)
        raise RowError(problem)
    return os.fdopen(fd, "rb")


def _unopenable_message(path: str, exc: OSError) -> str:
    """Why ``os.open`` failed on ``path``, in words: missing, a dangling or looping symlink, no permission."""
    if isinstance(exc, FileNotFoundError):
        if os.path.islink(path):
            return f"image path {path} is a symlink to a missing file ({os.readlink(path)})"
        return f"image file not found: {path}"
    if os.path.isdir(path):
        return f"image path is a directory, not a file: {path}"
    if exc.errno == errno.ELOOP:
        return f"image path {path} is a symlink loop: it never resolves to a file"
    if isinstance(exc, PermissionError):
        return f"permission denied reading image file {path}"
    return f"cannot open image file {path}: {exc.strerror or exc}"


@contextlib.contextmanager
def _decode_errors(path: str) -> Iterator[None]:
    """Turn whatever Pillow raises for a malformed file into a ``RowError`` naming the file.

    Plugins raise many types for bad input (``ValueError``, ``NotImplementedError``, ``SyntaxError``,
    ``EOFError``, ``struct.error``, ``MemoryError`` ...), so every ``Exception`` is one row's failure;
    ``KeyboardInterrupt`` and other ``BaseException``s still stop the run.
    """
    try:
        yield
    except RowError:
        raise
    except Image.DecompressionBombError as exc:
        raise RowError(f"image {path} is too large to decode safely (decompression bomb guard): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise RowError(f"not a readable image file: {path} (no image format Pillow knows matches it)") from exc
    except Exception as exc:
        raise RowError(f"cannot decode image {path}: {type(exc).__name__}: {_one_line(exc)}") from exc


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation of ``img``; a broken EXIF block does not stop probing, it counts as upright.

    A PNG whose EXIF chunk is not before its image data counts as upright too: finding such a chunk means
    decoding the whole image (Pillow's ``getexif`` does), which would make probing as slow as reading. The probe
    only chooses a batch; the edit itself uses the decoded, transposed image.
    """
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        return img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:
        return 1


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert to RGB, putting transparent pixels on a white background instead of black, and scaling 16-bit,
    32-bit integer and float images to 8 bits (``_deep_to_8_bits``) instead of clipping them."""
    if img.mode.startswith(("I", "F")):
        return _deep_to_8_bits(img).convert("RGB")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    img.load()
    return img.copy()


def _deep_to_8_bits(img: Image.Image) -> Image.Image:
    """An 8-bit grayscale ("L") image of a 16-bit, 32-bit integer or float one ("I;16*", "I", "F").

    Pillow's own conversion clips such values at 255, which turns a 16-bit photo white. Instead:

    - 16-bit ("I;16", "I;16B", ...): the full 0..65535 range maps onto 0..255.
    - 32-bit integer ("I", as TIFF and some PNG readers give): values within 0..255 are kept, values within
      0..65535 are taken as 16-bit data, and any other range is stretched from its minimum to its maximum.
    - Float ("F"): 0..1 (the usual convention) maps onto 0..255, values within 0..255 are kept, and any other
      range is stretched; NaN and infinities become 0.
    """
    values = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        scaled = values * (255 / 65535)
    else:
        finite = np.isfinite(values)
        values = np.where(finite, values, 0.0)
        low, high = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 0.0)
        if img.mode == "F" and low >= 0 and high <= 1:
            scaled = values * 255
        elif low >= 0 and high <= 255:
            scaled = values
        elif img.mode != "F" and low >= 0 and high <= 65535:
            scaled = values * (255 / 65535)
        else:
            scaled = (values - low) * (255 / ((high - low) or 1))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


# -- Pillow's warnings, per file -----------------------------------------------------------------------------
# ``warnings.catch_warnings`` swaps process-wide state and is not thread-safe, while the driver probes images in
# a thread pool. Instead, two things are put in place at the first read/probe (and put back if something, such
# as an ending ``catch_warnings`` block, removed them):
#   - a ``warnings.showwarning`` hook that hands a warning raised by Pillow in a thread now inside read/probe to
#     that thread's collector, and passes every other warning to the handler it replaced;
#   - a filter at the front of ``warnings.filters`` whose module test matches Pillow's modules only in such a
#     thread, with the action "always": each file gets its warnings even when an earlier file raised the same
#     one from the same line (Python's default shows a location once), whatever the application's filters say.
# Outside read/probe neither changes anything. One limit: a warning the application has already been shown
# once (Python's "default" action records it per module) is skipped by Python before any filter is consulted.
_PILLOW_MODULE = re.compile(r"PIL(\.|$)")
_PILLOW_FOLDER = os.path.dirname(os.path.abspath(PIL.__file__)) + os.sep
_collector = threading.local()
_install_lock = threading.Lock()
_previous_showwarning = warnings.showwarning


class _PillowInCollectingThread:
    """Stands in for a warning filter's module pattern: Pillow's modules, in a thread inside read/probe only."""

    def match(self, module: str) -> bool:
        return getattr(_collector, "lines", None) is not None and _PILLOW_MODULE.match(module) is not None


_ALWAYS_WHILE_COLLECTING = ("always", None, Warning, _PillowInCollectingThread(), 0)


@contextlib.contextmanager
def _warnings_of(path: str, into: Optional[list]) -> Iterator[None]:
    """Collect the Pillow warnings this thread raises inside the block; log them and append them to ``into``."""
    _route_pillow_warnings()
    outer = getattr(_collector, "lines", None)
    _collector.lines = lines = []
    try:
        yield
    finally:
        _collector.lines = outer
        for text in lines:
            line = f"{path}: {text}"
            logger.debug("%s", line)
            if into is not None:
                into.append(line)


def _route_pillow_warnings() -> None:
    """Install the ``showwarning`` hook and the filter (first in the list), unless both are in place."""
    global _previous_showwarning
    if warnings.showwarning is _show_warning and warnings.filters[:1] == [_ALWAYS_WHILE_COLLECTING]:
        return
    with _install_lock:
        if warnings.showwarning is not _show_warning:
            _previous_showwarning = warnings.showwarning
            warnings.showwarning = _show_warning
        if warnings.filters[:1] != [_ALWAYS_WHILE_COLLECTING]:  # first, so that filters added since come after
            with contextlib.suppress(ValueError):
                warnings.filters.remove(_ALWAYS_WHILE_COLLECTING)
            warnings.filters.insert(0, _ALWAYS_WHILE_COLLECTING)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """``warnings.showwarning``: Pillow's warnings in a collecting thread go to it, the rest where they went."""
    lines = getattr(_collector, "lines", None)
    if lines is not None and os.path.abspath(filename).startswith(_PILLOW_FOLDER):
        lines.append(f"{category.__name__}: {_one_line(message)}")
        return
    _previous_showwarning(message, category, filename, lineno, file, line)
