"""``read(path)``: detect a file's format and build the resource it holds."""

from __future__ import annotations

import os

from datamint_core._npy import read_array_file
from datamint_core.errors import InputTooLargeError, RequestDeadlineExceeded, ResourceError
from datamint_core.io._checks import file_name, reason
from datamint_core.io._decoded import Decoded
from datamint_core.resources import RESOURCE_KINDS, BaseResource
from datamint_core.wire import record_with_file, resource_from_dict

#: Formats :func:`read` knows, as :func:`detect_format` names them.
FORMATS = ("dicom", "nifti", "png", "jpeg", "npy", "npz")
_ACCEPTED = (
    "accepted: a DICOM file (.dcm) or series directory, NIfTI (.nii, .nii.gz), PNG, JPEG, "
    ".npy or .npz"
)
# Failures that already say what is wrong, raised as they are; any other failure of a reader
# is the file's, and becomes a ResourceError naming the file.
_REPORTED = (ResourceError, InputTooLargeError, RequestDeadlineExceeded, ImportError, MemoryError)
_FORMAT_BY_SUFFIX = (
    ((".dcm", ".dicom"), "dicom"),
    ((".nii", ".nii.gz"), "nifti"),
    ((".png",), "png"),
    ((".jpg", ".jpeg"), "jpeg"),
    ((".npy",), "npy"),
    ((".npz",), "npz"),
)


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name the format of ``path`` from its first bytes (its suffix where bytes cannot tell).

    Returns:
        One of :data:`FORMATS`; a directory is ``dicom`` (a series directory).

    Raises:
        ResourceError: no such file, or a format that is not accepted.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return "dicom"
    if not os.path.isfile(path):
        raise ResourceError(f"Cannot read {path!r}: no such file or directory.")
    with open(path, "rb") as file:
        head = file.read(352)
    lower = path.lower()
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return "nifti"
    # The bytes did not tell: go by the suffix, so that the format's own reader says what is
    # wrong with the file (and reads DICOM written without its 128-byte preamble).
    for suffixes, name in _FORMAT_BY_SUFFIX:
        if lower.endswith(suffixes):
            return name
    suffix = ".nii.gz" if lower.endswith(".nii.gz") else os.path.splitext(lower)[1]
    # The bytes themselves are never quoted: the file may be anything (a link to a secret).
    raise ResourceError(
        f"Cannot tell the format of {file_name(path)} (suffix {suffix or '(none)'!r}; its "
        f"first bytes match none of the accepted formats); {_ACCEPTED}."
    )


def decode_path(
    path: str | os.PathLike[str], kind: str | None = None, *, fourth_axis: str = "auto"
) -> Decoded:
    """Read any accepted file into pixels and geometry, as ``kind`` when given.

    ``fourth_axis`` says how a 4-D NIfTI's fourth axis is read (:mod:`datamint_core.io.nifti`).

    Raises:
        ResourceError: the file cannot be read (as ``kind``): every failure of a reader or of
            the library under it, named with the file's name and without the file's bytes.
        InputTooLargeError: over the decode budget.
    """
    if kind is not None and kind not in RESOURCE_KINDS:
        raise ResourceError(f"Unknown kind {kind!r}; accepted kinds: {sorted(RESOURCE_KINDS)}.")
    path = os.fspath(path)
    file_format = detect_format(path)
    try:
        decoded = _decode(path, file_format, kind, fourth_axis)
    except _REPORTED:
        raise
    except Exception as error:  # numpy, pydicom, nibabel or Pillow on a file they choke on
        raise ResourceError(
            f"Cannot read {file_name(path)} as {file_format}: {reason(error, path)}. "
            f"{_ACCEPTED[0].upper()}{_ACCEPTED[1:]}."
        ) from error
    return _as_kind(decoded, kind, path)


def _decode(path: str, file_format: str, kind: str | None, fourth_axis: str) -> Decoded:
    if file_format == "dicom":
        from datamint_core.io.dicom import decode_dicom

        decoded = decode_dicom(path, kind)
    elif file_format == "nifti":
        from datamint_core.io.nifti import decode_nifti

        decoded = decode_nifti(path, fourth_axis)
    elif file_format in ("png", "jpeg"):
        from datamint_core.io.image import decode_image

        decoded = decode_image(path)
    else:
        array = read_array_file(path)
        guessed = {2: "image", 3: "volume", 4: "video"}.get(array.ndim, "image")
        decoded = Decoded(pixels=array, kind=guessed, mimetype="application/octet-stream")
    return decoded


def _as_kind(decoded: Decoded, kind: str | None, path: str) -> Decoded:
    """Turn a one-slice volume into an image, or a grayscale image into a one-slice volume."""
    if kind is None or kind == decoded.kind:
        return decoded
    if kind == "image" and decoded.kind == "volume" and decoded.pixels.shape[0] == 1:
        spacing = decoded.spacing[1:] if decoded.spacing is not None else None
        return Decoded(
            pixels=decoded.pixels[0],
            kind="image",
            mimetype=decoded.mimetype,
            spacing=spacing,
            modality=decoded.modality,
            metadata=decoded.metadata,
        )
    if kind == "volume" and decoded.kind == "image" and decoded.pixels.ndim == 2:
        spacing = (1.0, *decoded.spacing) if decoded.spacing is not None else None
        return Decoded(
            pixels=decoded.pixels[None],
            kind="volume",
            mimetype=decoded.mimetype,
            spacing=spacing,
            modality=decoded.modality,
            metadata=decoded.metadata,
        )
    if kind == "video" and decoded.kind == "volume" and decoded.affine is None:
        return Decoded(
            pixels=decoded.pixels,
            kind="video",
            mimetype=decoded.mimetype,
            modality=decoded.modality,
            metadata=decoded.metadata,
        )
    raise ResourceError(
        f"{path!r} holds {_describe(decoded)}, which cannot be read as {kind!r}; read it "
        f"as {decoded.kind!r} (datamint_core.io.read(path) picks the kind from the file)."
    )


def _describe(decoded: Decoded) -> str:
    return f"{'an' if decoded.kind == 'image' else 'a'} {decoded.kind} of shape " + str(
        tuple(decoded.pixels.shape)
    )


def read(
    path: str | os.PathLike[str], *, kind: str | None = None, fourth_axis: str = "auto"
) -> BaseResource:
    """Read a medical image file into a resource, with its geometry and metadata.

    The format is detected from the file's bytes: DICOM (a file, a series directory, a
    multi-frame file), NIfTI (``.nii``, ``.nii.gz``), PNG, JPEG, ``.npy`` or ``.npz``. A
    single-frame DICOM file, PNG and JPEG give an :class:`ImageResource`; a DICOM series,
    a multi-frame file with frame positions and NIfTI a :class:`VolumeResource` (``(D, H,
    W)``, RAS affine: see :mod:`datamint_core.io.geometry`); a multi-frame file without
    positions (ultrasound cine) a :class:`VideoResource`.

    Args:
        path: the file or DICOM series directory.
        kind: ``image``, ``volume`` or ``video`` to ask for a kind: a one-slice volume reads
            as an image and a 2-D image as a one-slice volume.
        fourth_axis: how a 4-D NIfTI's fourth axis is read: ``auto`` (time when the header
            gives it a time unit, else channels), ``channels`` or ``time``; see
            :mod:`datamint_core.io.nifti`.

    Returns:
        The resource, its pixels in memory; ``filename`` is the file's name.

    Raises:
        ResourceError: the file cannot be read, or not as ``kind``; the message says why.
        ImportError: the format's extra is not installed (it names the pip command).

    Example:
        >>> ct = read("ct_series/")                    # doctest: +SKIP
        >>> ct.pixels.shape, ct.spacing, ct.metadata["space"]  # doctest: +SKIP
        ((212, 512, 512), (1.25, 0.7, 0.7), 'RAS')
    """
    path = os.fspath(path)
    decoded = decode_path(path, kind, fourth_axis=fourth_axis)
    return resource_from_dict(record_with_file({}, decoded, file_name_of(path)))


def file_name_of(path: str) -> str:
    """The name a resource read from ``path`` gets (a series directory's own name)."""
    return os.path.basename(os.path.normpath(path))
