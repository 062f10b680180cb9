"""Read PNG and JPEG images (grayscale or RGB) with Pillow, with their pixel spacing.

The decode budget (``datamint_core._limits``) decides how large an image may be, not
Pillow's ``MAX_IMAGE_PIXELS``: a server request's budget refuses a huge image with the same
413 as any other pixel data, and a user's own file in their own process is read whatever its
size. A PNG declaring more pixels than its compressed data could ever hold is refused before
it is decoded.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from datamint_core._extras import require
from datamint_core.errors import InputTooLargeError, RequestDeadlineExceeded, ResourceError
from datamint_core.io._checks import DEFLATE_MAX_RATIO, check_held, file_name, reason
from datamint_core.io._decoded import Decoded, check_decoded_size

_MM_PER_INCH = 25.4
# Pillow modes read as they are; every other mode is converted to the one named here.
_KEPT_MODES = {"L", "I;16", "I;16B", "I", "F", "RGB"}
_CONVERTED_MODES = {"1": "L", "LA": "L", "P": "RGB", "PA": "RGB", "RGBA": "RGB", "CMYK": "RGB"}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# Samples per pixel of each PNG colour type (IHDR).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ACCEPTED = "Accepted: PNG or JPEG, grayscale or RGB."
# JPEG frame markers (SOFn) coded with Huffman tables, and the lossless ones among them.
_JPEG_HUFFMAN_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7}
_JPEG_LOSSLESS_FRAMES = {0xC3, 0xC7}
_JPEG_START_OF_SCAN = 0xDA
_JPEG_MAX_SEGMENTS = 256


def decode_image(path: str) -> Decoded:
    """Read a PNG or JPEG file as an ``(H, W)`` (grayscale) or ``(H, W, 3)`` (RGB) image.

    A palette image becomes RGB, an alpha channel is dropped. ``spacing`` is ``(H, W)`` in
    mm from the file's resolution (PNG ``pHYs``, JPEG JFIF density), when it has one.

    Raises:
        ResourceError: not an image Pillow can read, or a PNG declaring more pixels than
            its data holds.
        InputTooLargeError: the image is over the decode budget (a server's: HTTP 413).
        ImportError: Pillow is not installed (``pip install "datamint[images]"``).
    """
    require("PIL", "Reading PNG/JPEG")
    from PIL import JpegImagePlugin, PngImagePlugin

    with open(path, "rb") as file:
        head = file.read(33)
    if head.startswith(_PNG_MAGIC):
        _check_png_size(head, path)
        opener = PngImagePlugin.PngImageFile
    elif head.startswith(_JPEG_MAGIC):
        _check_jpeg_size(path)
        opener = JpegImagePlugin.JpegImageFile
    else:
        raise ResourceError(f"Cannot read {file_name(path)} as an image: {_ACCEPTED}")
    try:
        # The format's own class: Image.open would apply Pillow's decompression-bomb limit,
        # which the decode budget replaces.
        with opener(path) as image:
            bands = max(len(image.getbands()), 3)
            check_decoded_size((image.height, image.width, bands), 4, file_name(path))
            image.load()
            picture_format = image.format
            mode = image.mode
            if mode not in _KEPT_MODES:
                image = image.convert(_CONVERTED_MODES.get(mode, "RGB"))
            pixels = np.asarray(image)
            dpi = image.info.get("dpi")
    except (InputTooLargeError, RequestDeadlineExceeded, MemoryError):
        raise
    except Exception as error:  # Pillow raises many types for a bad file
        raise ResourceError(
            f"Cannot read {file_name(path)} as an image: {reason(error, path)}. {_ACCEPTED}"
        ) from None
    if not pixels.dtype.isnative:
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    spacing = None
    if dpi and all(np.isfinite(float(value)) and float(value) > 0 for value in dpi[:2]):
        # Pillow's dpi is (x, y): columns, then rows; spacing is (H, W).
        spacing = (_MM_PER_INCH / float(dpi[1]), _MM_PER_INCH / float(dpi[0]))
    return Decoded(
        pixels=pixels,
        kind="image",
        mimetype=f"image/{(picture_format or 'png').lower()}",
        spacing=spacing,
        metadata={"format": (picture_format or "").lower(), "mode": mode},
    )


def _check_png_size(head: bytes, path: str) -> None:
    """Refuse a PNG whose IHDR declares more raw bytes than its compressed data can hold."""
    if head[12:16] != b"IHDR" or len(head) < 26:
        return  # not a valid PNG: Pillow says what is wrong
    width, height = struct.unpack(">II", head[16:24])
    depth, colour = head[24], head[25]
    # Each row is one filter byte and its packed samples (interlacing only adds bytes).
    row_bytes = 1 + -(-width * depth * _PNG_CHANNELS.get(colour, 1) // 8)
    check_held(
        height * row_bytes,
        os.path.getsize(path) * DEFLATE_MAX_RATIO,
        f"IHDR {width}x{height} pixels at {depth} bits per sample",
        path,
    )


def _check_jpeg_size(path: str) -> None:
    """Refuse a Huffman-coded JPEG whose frame header (SOF) declares more pixels than its
    data can code: at least one bit per 8x8 block (DCT) or per pixel (lossless).

    Arithmetic-coded JPEG has no such bound; the decode budget applies to it.
    """
    with open(path, "rb") as file:
        file.seek(2)
        for _ in range(_JPEG_MAX_SEGMENTS):
            marker = file.read(4)
            if len(marker) < 4 or marker[0] != 0xFF:
                return  # not a well-formed JPEG: Pillow says what is wrong
            kind, length = marker[1], struct.unpack(">H", marker[2:4])[0]
            if kind in _JPEG_HUFFMAN_FRAMES:
                frame = file.read(5)
                if len(frame) < 5:
                    return
                height, width = struct.unpack(">HH", frame[1:5])
                per_bit = 1 if kind in _JPEG_LOSSLESS_FRAMES else 64
                needed = -(-height * width // per_bit) // 8
                check_held(
                    needed,
                    os.path.getsize(path),
                    f"SOF {width}x{height} pixels, whose coded data takes at least",
                    path,
                )
                return
            if kind == _JPEG_START_OF_SCAN or length < 2:
                return
            file.seek(length - 2, os.SEEK_CUR)
