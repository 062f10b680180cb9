"""What a reader hands back before it becomes a resource."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Decoded:
    """Pixels and what the file says about them, in datamint's geometry convention.

    Attributes:
        pixels: ``(H, W[, C])`` for an image, ``(D, H, W)`` for a volume, ``(T, H, W[, C])``
            for a video.
        kind: ``image``, ``volume`` or ``video``: what the file holds.
        spacing: ``(H, W)`` for an image, ``(D, H, W)`` for a volume, in mm; None if unknown.
        affine: 4x4 ``(d, h, w, 1)`` -> RAS mm for a volume; None if unknown.
        modality: DICOM modality (``CT``, ``MR``, ...), when the file has one.
        mimetype: the file's MIME type.
        metadata: JSON-ready facts from the file.
    """

    pixels: np.ndarray
    kind: str
    mimetype: str
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    modality: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def check_decoded_size(shape: Sequence[int], itemsize: int, where: str) -> None:
    """Refuse pixel data over the decode budget from its declared size, before allocating it.

    Every reader calls this one function with what the file's header declares. The budget is
    the serving layer's per-request one (``datamint_core._limits``), where that module is
    present; without it nothing is refused here.

    Raises:
        ValueError: over the budget (``InputTooLargeError``, which servers answer with 413).
    """
    try:
        from datamint_core._limits import check_decoded_size as check_budget
    except ImportError:
        return
    check_budget(list(shape), itemsize, where)
