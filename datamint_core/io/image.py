"""Read PNG and JPEG images (grayscale or RGB) with Pillow, with their pixel spacing."""

from __future__ import annotations

import numpy as np

from datamint_core.io._decoded import Decoded, check_decoded_size
from datamint_core.io._extras import require
from datamint_core.resources import ResourceError

_MM_PER_INCH = 25.4
# Pillow modes read as they are; every other mode is converted to the one named here.
_KEPT_MODES = {"L", "I;16", "I;16B", "I", "F", "RGB"}
_CONVERTED_MODES = {"1": "L", "LA": "L", "P": "RGB", "PA": "RGB", "RGBA": "RGB", "CMYK": "RGB"}


def decode_image(path: str) -> Decoded:
    """Read a PNG or JPEG file as an ``(H, W)`` (grayscale) or ``(H, W, 3)`` (RGB) image.

    A palette image becomes RGB, an alpha channel is dropped. ``spacing`` is ``(H, W)`` in
    mm from the file's resolution (PNG ``pHYs``, JPEG JFIF density), when it has one.

    Raises:
        ResourceError: not an image Pillow can read.
        ImportError: Pillow is not installed (``pip install "datamint[images]"``).
    """
    require("PIL", "Reading PNG/JPEG")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            bands = max(len(image.getbands()), 3)
            check_decoded_size((image.height, image.width, bands), 4, path)
            image.load()
            picture_format = image.format
            mode = image.mode
            if mode not in _KEPT_MODES:
                image = image.convert(_CONVERTED_MODES.get(mode, "RGB"))
            pixels = np.asarray(image)
            dpi = image.info.get("dpi")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ResourceError(
            f"Cannot read {path!r} as an image: {error}. Accepted: PNG or JPEG, grayscale or RGB."
        ) from None
    if not pixels.dtype.isnative:
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    spacing = None
    if dpi and all(float(value) > 0 for value in dpi[:2]):
        # Pillow's dpi is (x, y): columns, then rows; spacing is (H, W).
        spacing = (_MM_PER_INCH / float(dpi[1]), _MM_PER_INCH / float(dpi[0]))
    return Decoded(
        pixels=pixels,
        kind="image",
        mimetype=f"image/{(picture_format or 'png').lower()}",
        spacing=spacing,
        metadata={"format": (picture_format or "").lower(), "mode": mode},
    )
