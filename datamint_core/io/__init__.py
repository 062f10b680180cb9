"""Medical image files in and out: DICOM, NIfTI, PNG/JPEG readers with one geometry.

Readers need their extra (imported only when used): ``datamint[dicom]`` (pydicom and the
pylibjpeg decoders), ``datamint[nifti]`` (nibabel), ``datamint[images]`` (Pillow).

- :func:`read` detects the format and returns an image, volume or video resource;
  :func:`read_dicom`, :func:`read_nifti` and :func:`read_image` read one format.
- :func:`read_case` reads co-registered sources (``{"t1": ..., "t2": ...}``) as the named
  channels of one resource, after checking that their grids agree.
- Geometry: volumes are ``(D, H, W)``, the affine maps ``(d, h, w, 1)`` to RAS millimetres
  (DICOM's LPS is converted): see :mod:`datamint_core.io.geometry`.

Example::

    from datamint_core.io import read
    ct = read("ct_series/")          # a VolumeResource, slices ordered along the normal
    ct.pixels.shape, ct.spacing, ct.affine
"""

from __future__ import annotations

import os

from datamint_core.io._read import FORMATS, detect_format, read
from datamint_core.io.case import AFFINE_TOLERANCE_MM, read_case
from datamint_core.io.geometry import WORLD_FRAME
from datamint_core.resources import BaseResource

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "FORMATS",
    "WORLD_FRAME",
    "detect_format",
    "read",
    "read_case",
    "read_dicom",
    "read_image",
    "read_nifti",
]


def read_dicom(path: str | os.PathLike[str], *, kind: str | None = None) -> BaseResource:
    """Read a DICOM file, series directory or multi-frame file (see :func:`read`).

    Raises:
        ResourceError: not DICOM, mixed series (named), slices that cannot form one volume.
        ImportError: ``pip install "datamint[dicom]"``.
    """
    return _read_as("dicom", path, kind)


def read_nifti(path: str | os.PathLike[str], *, fourth_axis: str = "auto") -> BaseResource:
    """Read a ``.nii``/``.nii.gz`` file as a ``(D, H, W[, C])`` volume with its RAS affine.

    A 4-D file's fourth axis is read as channels or time by ``fourth_axis`` (``auto``,
    ``channels``, ``time``; the rule is in :mod:`datamint_core.io.nifti`).

    Raises:
        ResourceError: not NIfTI, more than 4 dimensions, or a fourth axis ``auto`` cannot
            tell.
        ImportError: ``pip install "datamint[nifti]"``.
    """
    return _read_as("nifti", path, None, fourth_axis)


def read_image(path: str | os.PathLike[str]) -> BaseResource:
    """Read a PNG or JPEG file as an ``(H, W)`` or ``(H, W, 3)`` image with its spacing.

    Raises:
        ResourceError: not PNG or JPEG.
        ImportError: ``pip install "datamint[images]"``.
    """
    return _read_as("image", path, None)


def _read_as(
    expected: str, path: str | os.PathLike[str], kind: str | None, fourth_axis: str = "auto"
) -> BaseResource:
    from datamint_core.errors import ResourceError

    found = detect_format(path)
    family = "image" if found in ("png", "jpeg") else found
    if family != expected:
        raise ResourceError(
            f"{os.fspath(path)!r} is {found}, not {expected}; read it with "
            f"datamint_core.io.read(path), which detects the format."
        )
    return read(path, kind=kind, fourth_axis=fourth_axis)
