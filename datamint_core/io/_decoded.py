"""What a reader hands back before it becomes a resource."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datamint_core._limits import check_decoded_size as check_budget


@dataclass
class Decoded:
    """Pixels and what the file says about them, in datamint's geometry convention.

    Attributes:
        pixels: ``(H, W[, C])`` for an image, ``(D, H, W[, C])`` for a volume,
            ``(T, H, W[, C])`` for a video.
        kind: ``image``, ``volume`` or ``video``: what the file holds.
        spacing: ``(H, W)`` for an image, ``(D, H, W)`` for a volume, in mm; None if unknown.
        affine: 4x4 ``(d, h, w, 1)`` -> RAS mm for a volume; None if unknown.
        modality: DICOM modality (``CT``, ``MR``, ...), when the file has one.
        mimetype: the file's MIME type.
        metadata: JSON-ready facts from the file.
        channel_names: names of the channels (the last axis), when known.
    """

    pixels: np.ndarray
    kind: str
    mimetype: str
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    modality: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    channel_names: tuple[str, ...] | None = None


def check_decoded_size(shape: Sequence[int], itemsize: int, where: str) -> None:
    """Refuse pixel data over the decode budget from its declared size, before allocating it.

    Every reader calls this one function with what the file's header declares; the budget is
    the one every pixel encoding shares (``datamint_core._limits``): the current request's in
    a server; outside a request (a user's own files) there is none, only the shape is checked.

    Raises:
        InputTooLargeError: over the budget (a ``ValueError``; servers answer it with 413).
    """
    check_budget([int(size) for size in shape], itemsize, where)
