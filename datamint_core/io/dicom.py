"""Read DICOM: one file, a series directory, or a multi-frame file.

A series directory's slices are ordered by ImagePositionPatient projected on the slice
normal (row x column of ImageOrientationPatient), never by file name or InstanceNumber,
and read straight into one preallocated, contiguous volume: uncompressed pixel data is read
from the file into the volume's memory with no intermediate copy; compressed transfer
syntaxes (JPEG, JPEG 2000, JPEG-LS, RLE) go through pydicom's decoders (pylibjpeg), one
frame at a time. RescaleSlope/RescaleIntercept are applied: the volume keeps the stored
integer type when no rescale is needed; an integer rescale gives a signed integer of the
stored width (``int16`` for 16-bit data) when every rescaled value the file holds fits it,
else the narrowest of ``int16``/``int32`` that holds the whole declared range
(BitsStored, PixelRepresentation); a fractional rescale gives ``float32``. Geometry follows
:mod:`datamint_core.io.geometry` (RAS).

Why one module of some 670 lines: the three shapes a DICOM input takes (one file, a series
directory, a multi-frame file) each order their frames and derive their geometry from the
same attributes, and the checks that refuse a lying geometry must be the same for all three.
What a header says is read in :mod:`datamint_core.io._dicom_header`, the pixels in
:mod:`datamint_core.io._dicom_pixels`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datamint_core._extras import require
from datamint_core._limits import check_deadline
from datamint_core.errors import ResourceError
from datamint_core.io._checks import check_held, file_name
from datamint_core.io._decoded import Decoded
from datamint_core.io._dicom_header import (
    _PIXEL_DATA_TAG,
    _count,
    _described,
    _full,
    _functional,
    _get,
    _Header,
    _length,
    _metadata,
    _modality,
    _orientation,
    _pixel_spacing,
    _read_header,
    _rounded,
    _spacing,
    _tag_values,
    _uid,
    _values,
)
from datamint_core.io._dicom_pixels import (
    _frame_rescales,
    _frames_array,
    _read_volume,
    _rescale_of,
    _rescaled,
)
from datamint_core.io.geometry import affine_problem, dicom_affine, slice_normal

_logger = logging.getLogger(__name__)
# Two slices closer than this along the normal (mm) are at the same position.
_SAME_POSITION_MM = 1e-3
_ORIENTATION_TOLERANCE = 1e-4
_DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
# An encapsulated (compressed) frame takes at least one item: an 8-byte item header.
_ITEM_HEADER_BYTES = 8
# The most bytes one byte of compressed pixel data decodes to, by transfer syntax: RLE
# repeats a byte at most 128 times for 2 bytes; Huffman-coded JPEG spends at least one bit
# per 8x8 block of samples (DCT) or per sample (lossless), of up to 16 bits each.
_MAX_EXPANSION = {
    "1.2.840.10008.1.2.5": 64,  # RLE Lossless
    "1.2.840.10008.1.2.4.50": 1024,  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": 1024,  # JPEG Extended
    "1.2.840.10008.1.2.4.57": 16,  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": 16,  # JPEG Lossless, first-order prediction
}


def decode_dicom(path: str, kind: str | None = None) -> Decoded:
    """Read a DICOM file or series directory into pixels and geometry.

    Args:
        path: a ``.dcm`` file (single- or multi-frame) or a directory holding one series.
        kind: ``volume`` to read a single-frame file as a one-slice volume; otherwise a
            single-frame file is an image, a series or a multi-frame file with positions a
            volume, and a multi-frame file without positions (ultrasound cine) a video.

    Raises:
        ResourceError: not DICOM, no pixel data, several series in one directory, slices
            that cannot be ordered into one volume.
        ImportError: pydicom is not installed (``pip install "datamint[dicom]"``).
    """
    require("pydicom", "Reading DICOM")
    if os.path.isdir(path):
        headers = _directory_headers(path)
        if len(headers) == 1:
            return _decode_file(_full(headers[0]), kind)
        return _decode_series(headers, path)
    header = _read_header(path)
    if header is None:
        raise ResourceError(
            f"Cannot read {file_name(path)} as DICOM: it is not a DICOM file (no 'DICM' marker "
            "and no readable DICOM header). Accepted: a DICOM file or a directory of one series."
        )
    if "PixelData" not in header.dataset:
        raise ResourceError(
            f"Cannot read {file_name(path)} as an image: the DICOM file has no pixel data "
            f"(SOP class {_uid(_described(header.dataset, 'SOPClassUID'))})."
        )
    return _decode_file(header, kind)


def ordered_source_datasets(path: str) -> tuple[list[Any], list[int] | None]:
    """The source datasets of a DICOM volume, in the order :func:`decode_dicom` reads them.

    For DICOM SEG writing: a series directory gives one dataset per slice, sorted along the
    normal; a single file gives itself. A multi-frame file also gives ``frame_order``, the
    stored frame behind each slice of the volume (``None`` otherwise).

    Raises:
        ResourceError: what :func:`decode_dicom` raises for the same path.
    """
    require("pydicom", "Reading DICOM")
    if os.path.isdir(path):
        headers = _directory_headers(path)
    else:
        header = _read_header(path)
        if header is None:
            raise ResourceError(f"Cannot read {file_name(path)} as DICOM: it is not a DICOM file.")
        headers = [header]
    if len(headers) == 1:
        header = _full(headers[0])
        frames = _declared_frames(header)
        if frames == 1:
            return [header.dataset], None
        geometry = _multiframe_geometry(header, frames)
        if geometry is None:
            raise ResourceError(f"{file_name(path)} is a multi-frame file without frame positions.")
        return [header.dataset], geometry.order
    geometry = _series_geometry(headers, path)
    assert geometry is not None  # several slices: every one has a position, or it raised
    return [_full(headers[i]).dataset for i in geometry.order], None


def image_affine(path: str) -> np.ndarray | None:
    """The affine of a single-frame DICOM image seen as a one-slice volume ``(1, H, W)``.

    What :func:`decode_dicom` gives the same file read with ``kind="volume"``, without
    decoding its pixels: the slice's position and orientation, PixelSpacing, and
    SpacingBetweenSlices (else SliceThickness, else 1 mm) along the normal.

    Returns:
        The 4x4 ``(d, h, w, 1)`` -> RAS matrix; ``None`` when the file has no
        ImagePositionPatient or ImageOrientationPatient.

    Raises:
        ResourceError: not one single-frame DICOM image, or a geometry attribute that is not
            valid (named, with what is accepted).
    """
    require("pydicom", "Reading DICOM")
    headers = _directory_headers(path) if os.path.isdir(path) else [_read_header(path)]
    if len(headers) != 1 or headers[0] is None or _declared_frames(headers[0]) != 1:
        raise ResourceError(
            f"{file_name(path)} is not one single-frame DICOM image; accepted: a DICOM file "
            "holding one image."
        )
    header = _full(headers[0])
    geometry = _series_geometry([header], path)
    return None if geometry is None else _geometry_affine(geometry, header, path)


def _directory_headers(directory: str) -> list[_Header]:
    names = sorted(
        entry.name
        for entry in os.scandir(directory)
        if entry.is_file() and not entry.name.startswith(".")
    )
    headers: list[_Header] = []
    skipped = 0
    for name in names:
        check_deadline()
        header = _read_header(os.path.join(directory, name), full=False)
        if header is None or "PixelData" not in header.dataset:
            skipped += 1  # DICOMDIR, reports, notes beside the slices
            continue
        headers.append(header)
    if not headers:
        raise ResourceError(
            f"The directory {directory!r} holds no DICOM file with pixel data "
            f"({len(names)} files looked at). Accepted: a directory of one DICOM series."
        )
    if skipped:
        _logger.debug("Skipped %d files without DICOM pixel data in %s", skipped, directory)
    series: dict[str, list[_Header]] = {}
    for header in headers:
        series.setdefault(str(header.get("SeriesInstanceUID", "(none)")), []).append(header)
    if len(series) > 1:
        listed = "; ".join(
            f"{uid} ({len(members)} files, e.g. {os.path.basename(members[0].path)!r}"
            + (
                f", {members[0].get('SeriesDescription')!r})"
                if members[0].get("SeriesDescription")
                else ")"
            )
            for uid, members in sorted(series.items())
        )
        raise ResourceError(
            f"The directory {directory!r} mixes {len(series)} DICOM series: {listed}. "
            "Accepted: a directory holding one series; put each series in its own directory."
        )
    return headers


@dataclass
class _Geometry:
    """Where the slices (or frames) of a volume lie, checked: every value finite, the
    orientation a perpendicular pair of unit directions, the spacing positive.

    ``order`` lists the slices (or stored frames) along the normal; ``positions`` are their
    ImagePositionPatient values in that order.
    """

    order: list[int]
    orientation: np.ndarray
    positions: np.ndarray
    pixel_spacing: tuple[float, float] | None


def _decode_file(header: _Header, kind: str | None) -> Decoded:
    frames = _declared_frames(header)
    if frames > 1:
        return _decode_multiframe(header, frames)
    if kind == "volume":
        return _decode_series([header], header.path)
    name = file_name(header.path)
    _series_geometry([header], header.path)  # a 2-D image's geometry is checked all the same
    rescale = _rescale_of(header.dataset, name)
    spacing = _pixel_spacing(header.dataset, name)
    pixels = _frames_array(header)
    pixels, _ = _rescaled(pixels, [rescale], header)
    return Decoded(
        pixels=pixels,
        kind="image",
        mimetype="application/dicom",
        spacing=spacing,
        modality=_modality(header),
        metadata=_metadata(header, [_described(header.dataset, "SOPInstanceUID")], rescale),
    )


def _decode_series(headers: list[_Header], where: str) -> Decoded:
    """Order single-frame files along the slice normal and read them into one volume."""
    for header in headers:
        if _declared_frames(header) > 1:
            raise ResourceError(
                f"{file_name(header.path)} is a multi-frame file inside a series directory; "
                "read multi-frame files one at a time."
            )
    _same_frame_layout(headers, where)
    geometry = _series_geometry(headers, where)
    first = _full(headers[0])
    _no_modality_lut(first, where)
    ordered = headers if geometry is None else [headers[i] for i in geometry.order]
    rescales = [_rescale_of(h.dataset, file_name(h.path)) for h in ordered]
    volume = _read_volume(ordered, rescales)
    if geometry is None:  # one slice without a position or an orientation
        spacing2d = _pixel_spacing(first.dataset, file_name(first.path)) or (1.0, 1.0)
        affine = None
    else:
        spacing2d = geometry.pixel_spacing or (1.0, 1.0)
        affine = _geometry_affine(geometry, first, where)
    return Decoded(
        pixels=volume,
        kind="volume",
        mimetype="application/dicom",
        spacing=_volume_spacing(affine, spacing2d, first),
        affine=affine,
        modality=_modality(first),
        metadata=_metadata(
            first, [_described(h.dataset, "SOPInstanceUID") for h in ordered], rescales[0]
        ),
    )


def _decode_multiframe(header: _Header, frames: int) -> Decoded:
    """A multi-frame file: a volume when its frames have positions, else a video."""
    rescales = _frame_rescales(header, frames)
    geometry = _multiframe_geometry(header, frames)
    if geometry is None:
        pixels = _frames_array(header)
        pixels, _ = _rescaled(pixels, rescales, header)
        return Decoded(
            pixels=pixels,
            kind="video",
            mimetype="application/dicom",
            modality=_modality(header),
            metadata=_metadata(header, [_described(header.dataset, "SOPInstanceUID")], rescales[0]),
        )
    _no_modality_lut(header, header.path)
    order = geometry.order
    volume = _read_volume([header] * frames, [rescales[i] for i in order], frame_indices=order)
    pixel_spacing = geometry.pixel_spacing or (1.0, 1.0)
    affine = _geometry_affine(geometry, header, header.path)
    return Decoded(
        pixels=volume,
        kind="volume",
        mimetype="application/dicom",
        spacing=_volume_spacing(affine, pixel_spacing, header),
        affine=affine,
        modality=_modality(header),
        metadata=_metadata(
            header, [_described(header.dataset, "SOPInstanceUID")], rescales[order[0]]
        ),
    )


def _series_geometry(headers: Sequence[_Header], where: str) -> _Geometry | None:
    """The checked geometry of single-frame slices, ordered along their normal.

    Returns:
        ``None`` for one slice without ImagePositionPatient or ImageOrientationPatient.

    Raises:
        ResourceError: a geometry attribute that is not valid (named, with its file), slices
            of several orientations or pixel spacings, a slice without a position or an
            orientation in a series of several, two slices at one position.
    """
    names = [os.path.basename(h.path) for h in headers]
    orientations, positions, spacings = [], [], []
    for header, name in zip(headers, names, strict=True):
        check_deadline()
        where_slice = repr(name)
        orientations.append(
            _orientation(_get(header.dataset, "ImageOrientationPatient", where_slice), where_slice)
        )
        positions.append(_tag_values(header.dataset, "ImagePositionPatient", 3, where_slice))
        spacings.append(_pixel_spacing(header.dataset, where_slice))
    if len(headers) == 1:
        if orientations[0] is None or positions[0] is None:
            return None
        return _Geometry([0], orientations[0], positions[0][None, :], spacings[0])
    for keyword, values in (
        ("ImagePositionPatient", positions),
        ("ImageOrientationPatient", orientations),
    ):
        missing = next(
            (name for name, value in zip(names, values, strict=True) if value is None), None
        )
        if missing is not None:
            raise ResourceError(
                f"Cannot order the slices of {file_name(where)}: {missing!r} has no {keyword}. "
                "A series directory needs ImagePositionPatient and ImageOrientationPatient "
                "on every slice."
            )
    orientation = orientations[0]
    for name, other in zip(names[1:], orientations[1:], strict=True):
        if not np.allclose(other, orientation, atol=_ORIENTATION_TOLERANCE):
            raise ResourceError(
                f"The slices of {file_name(where)} do not share one orientation "
                f"(ImageOrientationPatient of {names[0]!r}: {_rounded(orientation)}, "
                f"{name!r}: {_rounded(other)}); accepted: one series of parallel slices."
            )
    _same_pixel_spacing(spacings, names, where)
    stacked = np.array(positions, dtype=float)
    order = _order_along_normal(stacked, orientation, names, where)
    return _Geometry(order, orientation, stacked[order], spacings[0])


def _multiframe_geometry(header: _Header, frames: int) -> _Geometry | None:
    """The checked geometry of a multi-frame file's frames, ordered along their normal.

    Enhanced files (CT, MR, PET) give each frame its plane in the functional groups; legacy
    ones (RT dose, NM) one position and GridFrameOffsetVector along the normal.

    Returns:
        ``None`` when the frames have no plane geometry at all (ultrasound cine): a video.

    Raises:
        ResourceError: a geometry attribute that is not valid (named, with its frame), some
            frames with a plane and some without, frames of several orientations.
    """
    dataset, name = header.dataset, file_name(header.path)
    per_frame = _get(dataset, "PerFrameFunctionalGroupsSequence", name)
    if per_frame is not None:  # as many items as frames: checked by _declared_frames
        orientations, positions, spacings = [], [], []
        for index in range(frames):
            check_deadline()
            where = f"frame {index + 1} of {name}"
            orientation_value = _functional(
                dataset, index, "PlaneOrientationSequence", "ImageOrientationPatient"
            )
            orientations.append(_orientation(orientation_value, where))
            positions.append(
                _values(
                    _functional(dataset, index, "PlanePositionSequence", "ImagePositionPatient"),
                    "ImagePositionPatient",
                    3,
                    where,
                )
            )
            spacings.append(
                _spacing(
                    _functional(dataset, index, "PixelMeasuresSequence", "PixelSpacing"),
                    "PixelSpacing",
                    where,
                )
            )
        if all(value is None for value in (*orientations, *positions)):
            return None
        for keyword, values in (
            ("ImagePositionPatient", positions),
            ("ImageOrientationPatient", orientations),
        ):
            missing = next((i for i, value in enumerate(values) if value is None), None)
            if missing is not None:
                raise ResourceError(
                    f"Frame {missing + 1} of {name} has no {keyword} (PlanePositionSequence, "
                    "PlaneOrientationSequence) while other frames have one; accepted: a plane "
                    "for every frame, or for none (a video)."
                )
        orientation = orientations[0]
        for index, other in enumerate(orientations[1:], start=2):
            if not np.allclose(other, orientation, atol=_ORIENTATION_TOLERANCE):
                raise ResourceError(
                    f"The frames of {name} do not share one orientation "
                    f"(ImageOrientationPatient of frame 1: "
                    f"{_rounded(orientation)}, frame {index}: {_rounded(other)}); accepted: "
                    "parallel frames."
                )
        frame_names = [f"frame {i + 1}" for i in range(frames)]
        _same_pixel_spacing(spacings, frame_names, header.path)
        stacked = np.array(positions, dtype=float)
        pixel_spacing = spacings[0]
    else:
        orientation = _orientation(_get(dataset, "ImageOrientationPatient", name), name)
        origin = _tag_values(dataset, "ImagePositionPatient", 3, name)
        offsets = _tag_values(
            dataset,
            "GridFrameOffsetVector",
            frames,
            name,
            accepted=f"one finite number per frame (NumberOfFrames={frames})",
        )
        if orientation is None or origin is None or offsets is None:
            return None
        offsets = _relative_offsets(offsets, orientation, origin, name)
        stacked = origin[None, :] + offsets[:, None] * slice_normal(orientation)[None, :]
        frame_names = [f"frame {i + 1}" for i in range(frames)]
        pixel_spacing = _pixel_spacing(dataset, name)
    order = _order_along_normal(stacked, orientation, frame_names, header.path)
    return _Geometry(order, orientation, stacked[order], pixel_spacing)


def _relative_offsets(
    offsets: np.ndarray, orientation: np.ndarray, origin: np.ndarray, name: str
) -> np.ndarray:
    """GridFrameOffsetVector as offsets from ImagePositionPatient along the normal.

    DICOM (PS3.3 C.8.8.3.2) allows two forms: relative (the first offset is 0) and, on an
    axial grid, absolute (the offsets are z coordinates, the first one ImagePositionPatient's).
    """
    if offsets[0] == 0:
        return offsets
    axial = np.allclose(orientation, (1, 0, 0, 0, 1, 0), atol=_ORIENTATION_TOLERANCE)
    if axial and abs(offsets[0] - origin[2]) < _SAME_POSITION_MM:
        return offsets - offsets[0]
    raise ResourceError(
        f"GridFrameOffsetVector of {name} starts at {offsets[0]:g}: neither 0 (offsets "
        "relative to ImagePositionPatient) nor, on an axial grid, the z of "
        f"ImagePositionPatient ({origin[2]:g}; absolute offsets); accepted: one of those two "
        "forms."
    )


def _order_along_normal(
    positions: np.ndarray, orientation: np.ndarray, names: Sequence[str], where: str
) -> list[int]:
    projections = positions @ slice_normal(orientation)
    order = np.argsort(projections, kind="stable")
    with np.errstate(over="ignore", invalid="ignore"):
        gaps = np.diff(projections[order])
    if not np.isfinite(gaps).all():
        raise ResourceError(
            f"The ImagePositionPatient values of {file_name(where)} lie too far apart to be "
            f"one volume ({_rounded(projections)} mm along the normal); accepted: finite "
            "positions in millimetres."
        )
    if gaps.size and gaps.min() < _SAME_POSITION_MM:
        at = int(np.argmin(gaps))
        first, second = names[order[at]], names[order[at + 1]]
        raise ResourceError(
            f"Cannot build one volume from {file_name(where)}: {first!r} and {second!r} lie "
            f"at the same position along the slice normal ({projections[order[at]]:.3f} mm, "
            "from their ImagePositionPatient). "
            "The series holds several volumes (echoes, phases or time points); accepted: one "
            "volume per series directory or file."
        )
    if gaps.size > 1 and np.ptp(gaps) > max(0.01 * float(np.median(gaps)), 1e-3):
        warnings.warn(
            f"The slices of {file_name(where)} are not evenly spaced (gaps from "
            f"{gaps.min():.3f} to {gaps.max():.3f} mm; a slice may be missing); the affine "
            "uses their mean step.",
            stacklevel=4,
        )
    return [int(i) for i in order]


def _geometry_affine(geometry: _Geometry, header: _Header, where: str) -> np.ndarray:
    """The checked ``(d, h, w)`` -> RAS affine of ordered slices (or frames)."""
    step = _slice_step(geometry, header)
    affine = dicom_affine(
        geometry.positions[0], geometry.orientation, geometry.pixel_spacing or (1.0, 1.0), step
    )
    return _checked_affine(affine, where)


def _slice_step(geometry: _Geometry, header: _Header) -> np.ndarray:
    """The vector from one slice's position to the next one's (LPS, mm)."""
    positions = geometry.positions
    if len(positions) > 1:
        return (positions[-1] - positions[0]) / (len(positions) - 1)
    name = file_name(header.path)
    thickness = _length(header.dataset, "SpacingBetweenSlices", name)
    if thickness is None:
        thickness = _length(header.dataset, "SliceThickness", name)
    return slice_normal(geometry.orientation) * (thickness or 1.0)


def _volume_spacing(
    affine: np.ndarray | None, pixel_spacing: Sequence[float], header: _Header
) -> tuple[float, float, float]:
    if affine is not None:
        lengths = np.linalg.norm(affine[:3, :3], axis=0)
        return (float(lengths[0]), float(lengths[1]), float(lengths[2]))
    thickness = _length(header.dataset, "SliceThickness", file_name(header.path))
    return (thickness or 1.0, float(pixel_spacing[0]), float(pixel_spacing[1]))


def _checked_affine(affine: np.ndarray, where: str) -> np.ndarray:
    problem = affine_problem(affine)
    if problem is not None:
        raise ResourceError(
            f"The geometry of {file_name(where)} (ImagePositionPatient, "
            f"ImageOrientationPatient, PixelSpacing) gives an affine that {problem}; accepted: "
            "finite positions, a valid orientation and positive spacings."
        )
    return affine


def _no_modality_lut(header: _Header, where: str) -> None:
    if "ModalityLUTSequence" in header.dataset:
        raise ResourceError(
            f"{file_name(where)} maps its stored values with a Modality LUT Sequence, which "
            "datamint applies to single images and videos but not to volumes; accepted: a "
            "volume whose values use RescaleSlope/RescaleIntercept (or none)."
        )


def _same_pixel_spacing(
    spacings: Sequence[tuple[float, float] | None], names: Sequence[str], where: str
) -> None:
    first = spacings[0]
    for name, other in zip(names[1:], spacings[1:], strict=True):
        same = (other is None) == (first is None) and (
            other is None or np.allclose(other, first, rtol=1e-4)  # type: ignore[arg-type]
        )
        if not same:
            raise ResourceError(
                f"The slices of {file_name(where)} differ in PixelSpacing ({names[0]!r}: "
                f"{_rounded(first)}, {name!r}: {_rounded(other)}); accepted: slices that "
                "share one pixel spacing."
            )


def _same_frame_layout(headers: list[_Header], where: str) -> None:
    keys = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "PixelRepresentation")
    first = tuple(headers[0].get(k) for k in keys)
    for header in headers[1:]:
        layout = tuple(header.get(k) for k in keys)
        if layout != first:
            raise ResourceError(
                f"The slices of {file_name(where)} differ in size or pixel format: "
                f"{file_name(headers[0].path)} has {dict(zip(keys, first, strict=True))}, "
                f"{file_name(header.path)} has {dict(zip(keys, layout, strict=True))}."
            )
    if int(first[2] or 1) != 1:
        raise ResourceError(
            f"{file_name(where)} is a colour series (SamplesPerPixel={first[2]}); volumes are "
            "read from grayscale series only."
        )


def _declared_frames(header: _Header) -> int:
    """NumberOfFrames of a file, once its declared pixel data is known to fit in the file.

    Rows x Columns x SamplesPerPixel x BitsAllocated x NumberOfFrames is compared with the
    bytes the file holds after its PixelData tag before anything is done per frame: a small
    file declaring a huge volume is refused at once, whatever the decode budget.

    Raises:
        ResourceError: a layout attribute that is missing or not a positive integer, or a
            declared size the file cannot hold.
    """
    dataset, name = header.dataset, file_name(header.path)
    frames = _count(dataset, "NumberOfFrames", name, default=1)
    rows = _count(dataset, "Rows", name)
    columns = _count(dataset, "Columns", name)
    samples = _count(dataset, "SamplesPerPixel", name, default=1)
    bits = _count(dataset, "BitsAllocated", name)
    bits_stored = _count(dataset, "BitsStored", name, default=bits)
    representation = _get(dataset, "PixelRepresentation", name)
    if bits_stored > bits or representation not in (None, "", 0, 1):
        raise ResourceError(
            f"{name} declares BitsStored={bits_stored}, BitsAllocated={bits}, "
            f"PixelRepresentation={representation}; accepted: BitsStored "
            "at most BitsAllocated, PixelRepresentation 0 (unsigned) or 1 (signed)."
        )
    per_frame = _get(dataset, "PerFrameFunctionalGroupsSequence", name)
    if per_frame is not None and len(per_frame) != frames:
        raise ResourceError(
            f"{name} declares NumberOfFrames={frames} but its "
            f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items; accepted: one "
            "item per frame."
        )
    held = _pixel_data_bytes(header)
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and getattr(syntax, "is_encapsulated", False):
        # Each compressed frame is one item or more; the offset table is one more.
        room = max(0, held // _ITEM_HEADER_BYTES - 1)
        if frames > room:
            raise ResourceError(
                f"{name} declares NumberOfFrames={frames}, but its compressed pixel data "
                f"({held} bytes) has room for at most {room} frames; accepted: a file holding "
                "every frame its header declares."
            )
        expansion = _MAX_EXPANSION.get(str(syntax))
        if expansion is None:
            return frames  # JPEG-LS, JPEG 2000: no bound; the decode budget applies
        held *= expansion
    declared = -(-frames * rows * columns * samples * bits // 8)
    if str(_get(dataset, "PhotometricInterpretation", name) or "") == "YBR_FULL_422":
        declared = declared * 2 // 3  # two chroma samples for every two pixels, not four
    check_held(
        declared,
        held,
        f"NumberOfFrames={frames} of Rows={rows} x Columns={columns} x "
        f"SamplesPerPixel={samples} at BitsAllocated={bits}",
        header.path,
    )
    return frames


def _pixel_data_bytes(header: _Header) -> int:
    """The most bytes the PixelData value of a file can hold: its length, within the file."""
    element = header.dataset.get_item(_PIXEL_DATA_TAG, keep_deferred=True)
    value = getattr(element, "value", None)
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    length = getattr(element, "length", None)
    syntax = getattr(getattr(header.dataset, "file_meta", None), "TransferSyntaxUID", None)
    if str(syntax) == _DEFLATED_SYNTAX:  # offsets are in the inflated stream, not the file
        return 0 if length is None or length == 0xFFFFFFFF else int(length)
    offset = getattr(element, "value_tell", None) or 0
    room = max(0, os.path.getsize(header.path) - offset)
    return room if length is None or length == 0xFFFFFFFF else min(int(length), room)
