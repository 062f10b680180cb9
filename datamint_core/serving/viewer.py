"""The viewer page: static files shipped in the package, and the preview it draws on.

``GET /`` serves ``static/index.html``; ``GET /static/<name>`` its script and style sheet
(only the files shipped, nothing else of the file system). ``POST /viewer/predict`` takes
what ``POST /invocations`` takes and answers the predictions plus the picture to draw them
on: the first resource's pixels windowed to 8 bits, as
``{"image": {"kind", "shape": [N, H, W], "channels": 1 or 3, "data": base64}, ...}``; for a
multi-channel case (named channels, or a volume with a channel axis) each channel is
windowed on its own and sent (``"channels": C``, ``"channel_names": [...]``, ``data``
``(N, H, W, C)``), and the page shows the one picked.
No build step and no CDN: the page works on a network with no way out.

The page and its files go out with :data:`PAGE_HEADERS`: the browser runs only the page's
own script and style sheet (no inline code, nothing from another origin), never shows the
page in a frame, and never sniffs a response into another type. The script itself puts every
text that comes from a model, a request or a file into the page as text (``textContent``,
``new Option``, ``append(string)``), never as HTML, so nothing in a label name or an error
message can run, with or without the policy.
"""

from __future__ import annotations

import base64
import json
from importlib import resources as package_files

import numpy as np

from datamint_core.resources import BaseResource

#: The files of the page, by URL name, with their media types.
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}


#: Response headers of the page and its static files.
PAGE_HEADERS = {
    "Content-Security-Policy": "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def static_file(name: str) -> bytes:
    """The bytes of one shipped static file (a name from :data:`STATIC_FILES`)."""
    return (package_files.files("datamint_core.serving") / "static" / name).read_bytes()


def with_preview(predictions_body: bytes, resources: list[BaseResource]) -> bytes:
    """Add the first resource's 8-bit picture to a ``{"predictions": ...}`` answer."""
    preview = json.dumps({"image": preview_of(resources[0])}, separators=(",", ":")).encode()
    return preview[:-1] + b"," + predictions_body[1:]


def preview_of(resource: BaseResource) -> dict:
    """The resource as 8-bit frames ``(N, H, W, C)``: what the page draws, slice by slice."""
    from datamint_core.io.writers import window_to_uint8

    pixels = resource.pixels
    if resource.kind == "image":
        pixels = pixels[None]
    names = resource.channel_names
    if pixels.ndim == 4 and (names is not None or resource.kind == "volume"):
        names = names or tuple(f"channel {index}" for index in range(pixels.shape[-1]))
        frames = np.empty(pixels.shape, dtype=np.uint8)
        for index in range(pixels.shape[-1]):  # each modality in its own window
            frames[..., index] = window_to_uint8(pixels[..., index], {})
        return {
            "kind": resource.kind,
            "shape": [int(size) for size in frames.shape[:3]],
            "channels": int(frames.shape[-1]),
            "channel_names": list(names),
            "data": base64.b64encode(frames.tobytes()).decode("ascii"),
        }
    colour = pixels.ndim == 4 and pixels.shape[-1] in (3, 4)
    if colour:
        pixels = pixels[..., :3]
        frames = pixels if pixels.dtype == np.uint8 else window_to_uint8(pixels, {})
    else:
        if pixels.ndim == 4:  # channels that are not colour: show the first
            pixels = pixels[..., 0]
        frames = window_to_uint8(pixels, resource.metadata)
    return {
        "kind": resource.kind,
        "shape": [int(size) for size in frames.shape[:3]],
        "channels": 3 if colour else 1,
        "data": base64.b64encode(np.ascontiguousarray(frames).tobytes()).decode("ascii"),
    }
