"""A corpus of good and broken image files that the tests build themselves, in a temp folder.

``build_corpus(folder)`` returns ``{name: path}``. Names starting with ``good_`` are images that must decode
(``good_with_warning.tif`` makes Pillow warn). Every other entry is broken in one way: truncated files of each
common format, files Pillow identifies but cannot decode, hand-made headers with impossible values, and paths
that are not regular files at all.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
from PIL import Image

# Formats Pillow writes that users commonly feed in, with the extension and save options of each.
TRUNCATABLE_FORMATS = {
    "png": {}, "jpg": {"quality": 90}, "gif": {}, "bmp": {}, "tiff": {}, "webp": {"quality": 90}, "ico": {},
    "ppm": {}, "tga": {}, "pcx": {}, "jp2": {}, "lzw.tiff": {"compression": "tiff_lzw"},
}
GOOD_FORMATS = ("png", "jpg", "webp", "lzw.tiff", "bmp")


def noise(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """Random RGB pixels: they do not compress, so cutting a file in half cuts into its pixel data."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def build_corpus(folder) -> dict[str, str]:
    """Write every corpus entry into ``folder`` (which must exist); return ``{name: path}``."""
    folder = str(folder)
    corpus: dict[str, str] = {}

    def put(name: str, data: bytes) -> None:
        corpus[name] = os.path.join(folder, name)
        with open(corpus[name], "wb") as handle:
            handle.write(data)

    for seed, ext in enumerate(GOOD_FORMATS):
        put(f"good_{seed}.{ext}", encode(noise(40 + 8 * seed, 32, seed=seed), ext))
    put("good_with_warning.tif", tiff_file(24, 16, extra_tags=((284, 3, 2, 1),)))  # 2 values for a 1-value tag
    for ext, options in TRUNCATABLE_FORMATS.items():
        data = encode(noise(), ext, **options)
        put(f"truncated.{ext}", data[: len(data) // 2])
    put("empty.png", b"")
    put("random_bytes.jpg", np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    put("png_bad_ihdr_crc.png", png_with_bad_ihdr_crc())
    put("png_corrupt_idat.png", png_with_corrupt_idat())
    put("tiff_strip_beyond_end.tif", tiff_file(16, 16, strip_offset=0x7FFF0000))
    put("tiff_absurd_size.tif", tiff_file(0x7FFFFFFF, 0x7FFFFFFF))
    put("tiff_zero_width.tif", tiff_file(0, 16))
    put("tiff_lzw_corrupt_strip.tiff", tiff_with_corrupt_lzw_strip())
    put("fits_without_image_data.fits", fits_without_image_data())
    put("dds_unsupported_dxgi.dds", dds_with_dxgi_format(93))
    special_paths(folder, corpus)
    return corpus


def special_paths(folder: str, corpus: dict[str, str]) -> None:
    """Paths that are not regular files: a folder, a FIFO, a symlink loop and a dangling symlink."""
    corpus["folder.png"] = os.path.join(folder, "folder.png")
    os.mkdir(corpus["folder.png"])
    corpus["fifo.png"] = os.path.join(folder, "fifo.png")
    os.mkfifo(corpus["fifo.png"])
    corpus["symlink_loop.png"] = os.path.join(folder, "symlink_loop.png")
    os.symlink("symlink_loop_back.png", corpus["symlink_loop.png"])
    os.symlink("symlink_loop.png", os.path.join(folder, "symlink_loop_back.png"))
    corpus["dangling_symlink.png"] = os.path.join(folder, "dangling_symlink.png")
    os.symlink("nowhere.png", corpus["dangling_symlink.png"])


def encode(image: Image.Image, ext: str, **options) -> bytes:
    """``image`` saved in the format that the last part of ``ext`` names."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, format=Image.registered_extensions()["." + ext.rsplit(".", 1)[-1]], **options)
    return buffer.getvalue()


# -- hand-made files ------------------------------------------------------------------------------------------
def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk of a PNG file."""
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        chunks.append((data[position + 4:position + 8], data[position + 8:position + 8 + length]))
        position += 12 + length
    return chunks


def png_file(chunks: list[tuple[bytes, bytes]], bad_crc: bytes = b"") -> bytes:
    """A PNG of ``chunks`` with correct checksums, except a wrong one on the chunk type ``bad_crc``."""
    out = b"\x89PNG\r\n\x1a\n"
    for kind, body in chunks:
        crc = zlib.crc32(kind + body) ^ (0xFFFFFFFF if kind == bad_crc else 0)
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
    return out


def png_with_bad_ihdr_crc() -> bytes:
    return png_file(png_chunks(encode(noise(16, 16), "png")), bad_crc=b"IHDR")


def png_with_corrupt_idat() -> bytes:
    """Valid chunk checksums around IDAT bytes that are not a zlib stream."""
    chunks = png_chunks(encode(noise(16, 16), "png"))
    return png_file([(kind, bytes(b ^ 0x5A for b in body) if kind == b"IDAT" else body) for kind, body in chunks])


def tiff_file(width: int, height: int, strip_offset: int = 0, extra_tags: tuple = ()) -> bytes:
    """A little-endian, uncompressed 8-bit grayscale TIFF whose header says ``width`` x ``height``.

    The pixel data (``width * height`` bytes, capped at 4 KiB) follows the header unless ``strip_offset``
    points elsewhere. ``extra_tags`` are (tag, type, count, value) entries added as they are.
    """
    pixels = bytes(i % 251 for i in range(min(width * height, 4096)))
    byte_count = min(width * height, 0xFFFFFFFF)
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, byte_count), *extra_tags]
    tags.sort()
    ifd_size = 2 + 12 * len(tags) + 4
    data_offset = 8 + ifd_size
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        if tag == 273:
            value = strip_offset or data_offset
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + pixels


def tiff_with_corrupt_lzw_strip() -> bytes:
    """An LZW TIFF whose compressed strip is scrambled: libtiff decodes it, fails, and prints to stderr itself."""
    data = bytearray(encode(noise(), "tiff", compression="tiff_lzw"))
    for i in range(16, len(data) // 2):  # libtiff writes the strip first and the tag directory at the end
        data[i] ^= 0x5A
    return bytes(data)


def fits_without_image_data() -> bytes:
    """A FITS primary header with NAXIS = 0 followed by a data block: Pillow identifies it, then finds no image."""
    cards = [f"{'SIMPLE':<8}= {'T':>20}", f"{'BITPIX':<8}= {8:>20}", f"{'NAXIS':<8}= {0:>20}", "END"]
    header = "".join(card.ljust(80) for card in cards).ljust(2880).encode("ascii")
    return header + bytes(2880)


def dds_with_dxgi_format(dxgi_format: int) -> bytes:
    """A 4x4 DDS with a DX10 extension header naming ``dxgi_format`` (93 is not one Pillow decodes)."""
    ddpf_fourcc = 0x4
    header = struct.pack("<6I", 0x1007, 4, 4, 16, 0, 1) + bytes(44)  # flags, height, width, pitch, depth, mipmaps
    header += struct.pack("<4I", 32, ddpf_fourcc, int.from_bytes(b"DX10", "little"), 0) + bytes(16)
    header += bytes(120 - len(header))
    dx10 = struct.pack("<5I", dxgi_format, 3, 0, 1, 0)
    return b"DDS " + struct.pack("<I", 124) + header + dx10 + bytes(64)
