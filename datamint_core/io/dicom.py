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
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datamint_core._extras import install_command, require
from datamint_core._limits import check_deadline
from datamint_core.errors import RequestDeadlineExceeded, ResourceError
from datamint_core.io._checks import check_held, file_name, reason
from datamint_core.io._decoded import Decoded, check_decoded_size
from datamint_core.io.geometry import WORLD_FRAME, affine_problem, dicom_affine, slice_normal

_logger = logging.getLogger(__name__)

_PIXEL_DATA_TAG = 0x7FE00010
# Values larger than this stay on disk while headers are parsed: the pixel data is then read
# straight into the volume, and nothing else large is parsed for nothing.
_DEFER_SIZE = 4096
_NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2": "<",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": "<",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2": ">",  # Explicit VR Big Endian (retired, still met)
}
# Two slices closer than this along the normal (mm) are at the same position.
_SAME_POSITION_MM = 1e-3
_ORIENTATION_TOLERANCE = 1e-4
# ImageOrientationPatient's two directions: unit length and perpendicular within these (DS
# values are written with limited precision; anything further off is not a direction pair).
_UNIT_LENGTH_TOLERANCE = 1e-2
_PERPENDICULAR_TOLERANCE = 1e-2
# What each geometry attribute must hold, as the error messages say it.
_ACCEPTED_VALUES = {
    "ImageOrientationPatient": "six finite numbers: a row and a column direction, each of "
    "unit length, perpendicular to each other",
    "ImagePositionPatient": "three finite numbers (mm)",
    "PixelSpacing": "two finite, positive numbers (mm)",
    "ImagerPixelSpacing": "two finite, positive numbers (mm)",
    "SliceThickness": "one finite, positive number (mm)",
    "SpacingBetweenSlices": "one finite, positive number (mm)",
    "DoseGridScaling": "one finite, positive number",
    "RescaleSlope": "one finite number",
    "RescaleIntercept": "one finite number",
}
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
_METADATA_KEYWORDS = (
    "SOPClassUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "SeriesNumber",
    "SeriesDescription",
    "StudyDescription",
    "BodyPartExamined",
    "Manufacturer",
    "ManufacturerModelName",
    "PatientPosition",
    "PhotometricInterpretation",
    "BitsStored",
    "RescaleType",
    "Units",
    "DecayCorrection",
    "DoseUnits",
    "DoseType",
    "DoseSummationType",
)


# What ordering and reading a series needs from each slice. Parsing only these keeps each
# slice's header small (a full CT header is about 90 kB of Python objects) and is faster.
_SLICE_KEYWORDS = (
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "SeriesDescription",
    "NumberOfFrames",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "PixelSpacing",
    "Modality",
    "DoseGridScaling",
    "PixelData",
)


@dataclass
class _Header:
    """One DICOM file, parsed up to (not including) its pixel data.

    ``full`` says whether every attribute was parsed, or only :data:`_SLICE_KEYWORDS`.
    """

    path: str
    dataset: Any  # pydicom.Dataset, its PixelData left on disk
    full: bool = True

    def get(self, keyword: str, default: Any = None) -> Any:
        return self.dataset.get(keyword, default)


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


def _read_header(path: str, full: bool = True) -> _Header | None:
    import pydicom
    from pydicom.errors import InvalidDicomError

    tags = None if full else list(_SLICE_KEYWORDS)
    try:
        dataset = pydicom.dcmread(path, defer_size=_DEFER_SIZE, specific_tags=tags)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError):
        return None
    return _Header(path, dataset, full)


def _full(header: _Header) -> _Header:
    """The same file with every attribute parsed."""
    if header.full:
        return header
    full = _read_header(header.path)
    if full is None:
        raise ResourceError(f"{file_name(header.path)} changed while it was being read.")
    return full


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


def _functional(dataset: Any, frame: int, sequence: str, keyword: str) -> Any:
    """A functional-group attribute of one frame: per-frame first, then shared."""
    per_frame = _get(dataset, "PerFrameFunctionalGroupsSequence")
    groups = [per_frame[frame]] if per_frame is not None else []
    shared = _get(dataset, "SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        items = group.get(sequence)
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return None


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


# --- pixels -----------------------------------------------------------------------------


def _stored_dtype(dataset: Any) -> np.dtype:
    bits = int(dataset.get("BitsAllocated", 16))
    signed = int(dataset.get("PixelRepresentation", 0) or 0) == 1
    if bits not in (8, 16, 32):
        raise ResourceError(
            f"DICOM BitsAllocated={bits} is not supported; accepted: 8, 16 or 32 bits."
        )
    return np.dtype(f"{'i' if signed else 'u'}{bits // 8}")


def _rescale_of(dataset: Any, where: str) -> tuple[float, float]:
    """The (slope, intercept) that turns stored values into real ones.

    RescaleSlope/RescaleIntercept (CT Hounsfield units, PET activity, ...); for RT dose,
    DoseGridScaling (stored values times it are the dose in DoseUnits).
    """
    if str(_get(dataset, "Modality", where) or "") == "RTDOSE":
        scaling = _tag_values(dataset, "DoseGridScaling", 1, where)
        if scaling is not None:
            if not scaling[0] > 0:
                raise _invalid("DoseGridScaling", where, scaling)
            return (float(scaling[0]), 0.0)
    return _rescale_values(
        _get(dataset, "RescaleSlope", where), _get(dataset, "RescaleIntercept", where), where
    )


def _rescale_values(slope: Any, intercept: Any, where: str) -> tuple[float, float]:
    slopes = _values(slope, "RescaleSlope", 1, where)
    intercepts = _values(intercept, "RescaleIntercept", 1, where)
    if slopes is not None and slopes[0] == 0:
        raise _invalid("RescaleSlope", where, slopes, accepted="one finite, non-zero number")
    return (
        float(slopes[0]) if slopes is not None else 1.0,
        float(intercepts[0]) if intercepts is not None else 0.0,
    )


def _frame_rescales(header: _Header, frames: int) -> list[tuple[float, float]]:
    """Each frame's (slope, intercept): its functional groups', else the file's."""
    dataset, name = header.dataset, file_name(header.path)
    shared = _rescale_of(dataset, name)
    per_frame = _get(dataset, "PerFrameFunctionalGroupsSequence", name)

    def frame_rescale(index: int) -> tuple[float, float]:
        slope = _functional(dataset, index, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _functional(
            dataset, index, "PixelValueTransformationSequence", "RescaleIntercept"
        )
        if slope is None and intercept is None:
            return shared
        return _rescale_values(slope, intercept, f"frame {index + 1} of {name}")

    if per_frame is None:  # one rescale (maybe a shared functional group's) for every frame
        return [frame_rescale(0)] * frames
    rescales = []
    for index in range(frames):
        check_deadline()
        rescales.append(frame_rescale(index))
    return rescales


def _output_dtype(dataset: Any, rescales: Sequence[tuple[float, float]]) -> np.dtype:
    """The narrowest type that holds every rescaled value exactly (float32 otherwise)."""
    stored = _stored_dtype(dataset)
    if all(slope == 1.0 and intercept == 0.0 for slope, intercept in rescales):
        return stored
    if not all(float(s).is_integer() and float(b).is_integer() for s, b in rescales):
        return np.dtype(np.float32)
    bits_stored = int(dataset.get("BitsStored", stored.itemsize * 8) or stored.itemsize * 8)
    if stored.kind == "i":
        low, high = -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    else:
        low, high = 0, 2**bits_stored - 1
    ends = [value * s + b for s, b in rescales for value in (low, high)]
    for candidate in (np.int16, np.int32):
        info = np.iinfo(candidate)
        if info.min <= min(ends) and max(ends) <= info.max:
            return np.dtype(candidate)
    return np.dtype(np.float32)


def _read_volume(
    headers: Sequence[_Header],
    rescales: Sequence[tuple[float, float]],
    frame_indices: Sequence[int] | None = None,
) -> np.ndarray:
    """Read frames into one preallocated volume, slot ``k`` from ``headers[k]``.

    The volume's type is :func:`_output_dtype`'s, except that an integer rescale keeps the
    stored width (``int16`` for 16-bit data) when every rescaled value the frames hold fits
    it: the stored values are read first, and rescaled in place once they are known to fit
    (a CT's -1024 intercept on 16-bit data would otherwise double the volume's bytes).
    The declared type is charged to the decode budget once, before anything is allocated;
    the request's deadline is checked before every slice or frame. A compressed multi-frame
    file is decoded one frame at a time, straight into its slot.
    """
    first = headers[0].dataset
    shape = (len(headers), int(first.Rows), int(first.Columns))
    out_dtype = _output_dtype(first, rescales)
    check_decoded_size(shape, out_dtype.itemsize, file_name(headers[0].path))
    stored = _stored_dtype(first)
    if out_dtype.kind == "i" and out_dtype.itemsize > stored.itemsize:
        narrow = _read_narrow(headers, rescales, frame_indices, shape, stored)
        if narrow is not None:
            return narrow
    volume = np.empty(shape, dtype=out_dtype)
    # Reading into the volume itself works when its type has the stored bytes' meaning.
    direct = out_dtype == stored or (
        out_dtype == np.int16 and stored == np.uint16 and int(first.get("BitsStored", 16)) <= 15
    )
    scratch = None if direct else np.empty(shape[1:], dtype=stored)

    def target_of(slot: int) -> np.ndarray:
        target = volume[slot].view(stored) if direct else scratch
        assert target is not None
        return target

    def rescale(slot: int) -> bool:
        slope, intercept = rescales[slot]
        if direct and (slope, intercept) == (1.0, 0.0):
            return True
        source = volume[slot] if direct else scratch
        np.multiply(source, slope, out=volume[slot], dtype=out_dtype, casting="unsafe")
        if intercept:
            np.add(volume[slot], intercept, out=volume[slot], dtype=out_dtype, casting="unsafe")
        return True

    _read_frames(headers, frame_indices, stored, target_of, rescale)
    return volume


def _read_narrow(
    headers: Sequence[_Header],
    rescales: Sequence[tuple[float, float]],
    frame_indices: Sequence[int] | None,
    shape: tuple[int, int, int],
    stored: np.dtype,
) -> np.ndarray | None:
    """The volume in a signed type of the stored width, when every rescaled value fits it.

    Reads the stored values into the volume, stopping at the first frame whose rescaled
    values do not fit (``None``: the caller reads again into the wider type, so memory never
    holds both); then rescales in place, one slot at a time.
    """
    narrow = np.dtype(f"i{stored.itemsize}")
    volume = np.empty(shape, dtype=narrow)
    as_stored = volume.view(stored)

    def fits(slot: int) -> bool:
        values = as_stored[slot]
        low, high = _rescaled_range(float(values.min()), float(values.max()), rescales[slot])
        return _holds(narrow, low, high)

    if not _read_frames(headers, frame_indices, stored, as_stored.__getitem__, fits):
        return None
    for slot, rescale in enumerate(rescales):
        _rescale_wrapping(volume[slot], rescale)
    return volume


def _rescale_wrapping(values: np.ndarray, rescale: tuple[float, float]) -> None:
    """Rescale integers in place, in their own (signed) type, by an integer rescale whose
    results are known to fit that type.

    The arithmetic wraps around (modulo 2**bits), which is exact for products and sums: a
    result that fits the type is the true one, whatever the intermediate values were, and
    the stored bits (unsigned ones included) are the stored value modulo 2**bits.
    """
    slope, intercept = (np.array(int(value)).astype(values.dtype) for value in rescale)
    if slope != 1:
        np.multiply(values, slope, out=values)
    if intercept:
        np.add(values, intercept, out=values)


def _rescaled_range(low: float, high: float, rescale: tuple[float, float]) -> tuple[float, float]:
    """The smallest and largest of ``low`` and ``high`` once rescaled (a slope may be < 0)."""
    slope, intercept = rescale
    ends = (low * slope + intercept, high * slope + intercept)
    return min(ends), max(ends)


def _holds(dtype: np.dtype, low: float, high: float) -> bool:
    """Whether the integer type ``dtype`` holds every integer from ``low`` to ``high``."""
    info = np.iinfo(dtype)
    return info.min <= low and high <= info.max


def _read_frames(
    headers: Sequence[_Header],
    frame_indices: Sequence[int] | None,
    stored: np.dtype,
    target_of: Callable[[int], np.ndarray],
    done: Callable[[int], bool],
) -> bool:
    """Read each slot's stored values into ``target_of(slot)``, then call ``done(slot)``.

    Returns:
        ``False`` as soon as ``done`` does (the frames after it are not read), else ``True``.
    """
    if frame_indices is not None and not _reads_natively(headers[0], stored):
        slot_of = {frame: slot for slot, frame in enumerate(frame_indices)}
        for frame, pixels in enumerate(_iter_frames(headers[0], len(frame_indices))):
            slot = slot_of[frame]
            _put(target_of(slot), pixels, headers[0])
            if not done(slot):
                return False
        return True
    for slot, header in enumerate(headers):
        check_deadline()
        frame = 0 if frame_indices is None else frame_indices[slot]
        target = target_of(slot)
        if not _read_native_frame(header, frame, target):
            _put(target, _frames_array(header, charge_budget=False), header)  # charged above
        if not done(slot):
            return False
    return True


def _put(target: np.ndarray, pixels: np.ndarray, header: _Header) -> None:
    """Put one decoded frame's stored values in its slot."""
    if pixels.shape != target.shape:
        raise ResourceError(
            f"The pixel data of {file_name(header.path)} decodes to frames of "
            f"{pixels.shape}, not the declared Rows x Columns {target.shape}."
        )
    target[...] = pixels


def _reads_natively(header: _Header, stored: np.dtype) -> bool:
    """Whether :func:`_read_native_frame` can read this file's frames straight from disk."""
    dataset = header.dataset
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or str(syntax) not in _NATIVE_SYNTAXES:
        return False
    if int(dataset.get("SamplesPerPixel", 1) or 1) != 1:
        return False
    bits_stored = int(dataset.get("BitsStored", stored.itemsize * 8) or stored.itemsize * 8)
    if stored.kind == "i" and bits_stored < stored.itemsize * 8:
        return False  # needs sign extension: pydicom's decoder does it
    element = dataset.get_item(_PIXEL_DATA_TAG, keep_deferred=True)
    return getattr(element, "value_tell", None) is not None and element.value is None


def _read_native_frame(header: _Header, frame: int, target: np.ndarray) -> bool:
    """Read one uncompressed frame from the file straight into ``target``; False if not native."""
    if not _reads_natively(header, target.dtype):
        return False
    dataset = header.dataset
    syntax = str(dataset.file_meta.TransferSyntaxUID)
    element = dataset.get_item(_PIXEL_DATA_TAG, keep_deferred=True)
    frame_bytes = target.nbytes
    if element.length is not None and element.length < (frame + 1) * frame_bytes:
        raise ResourceError(
            f"The pixel data of {file_name(header.path)} is truncated: {element.length} "
            f"bytes for frame {frame + 1} of {frame_bytes} bytes each."
        )
    with open(header.path, "rb") as file:
        file.seek(element.value_tell + frame * frame_bytes)
        read = file.readinto(memoryview(target).cast("B"))
    if read != frame_bytes:
        raise ResourceError(f"The pixel data of {file_name(header.path)} is truncated.")
    if _NATIVE_SYNTAXES[syntax] == ">" and target.dtype.itemsize > 1:
        target.byteswap(inplace=True)
    return True


def _iter_frames(header: _Header, frames: int) -> Iterator[np.ndarray]:
    """Decode a file's frames one at a time with pydicom (compressed syntaxes, colour), in
    stored order, checking the request's deadline before each.

    Raises:
        ResourceError: pydicom cannot decode them, or they are not ``frames`` frames.
    """
    from pydicom.pixels import iter_pixels

    frames_seen = 0
    try:
        decoded = iter_pixels(_full(header).dataset)
        while True:
            check_deadline()
            try:
                pixels = next(decoded)
            except StopIteration:
                break
            frames_seen += 1
            if frames_seen > frames:
                break
            yield pixels if pixels.dtype.isnative else pixels.astype(pixels.dtype.newbyteorder("="))
    except (RequestDeadlineExceeded, ResourceError, MemoryError):
        raise
    except Exception as error:  # pydicom raises many types for undecodable pixel data
        syntax = getattr(getattr(header.dataset, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise ResourceError(
            f"Cannot decode the pixel data of {file_name(header.path)} (transfer syntax "
            f"{name}): {reason(error, header.path)}. Compressed DICOM needs the decoders of "
            f"the dicom extra: {install_command('dicom')}."
        ) from None
    if frames_seen != frames:
        raise ResourceError(
            f"The pixel data of {file_name(header.path)} holds "
            f"{'more' if frames_seen > frames else frames_seen} frames, not the declared "
            f"NumberOfFrames={frames}."
        )


def _frames_array(header: _Header, *, charge_budget: bool = True) -> np.ndarray:
    """Decode every frame of a file with pydicom (compressed syntaxes, colour), one at a
    time into one array: ``(H, W[, C])`` for one frame, ``(frames, H, W[, C])`` for more."""
    dataset = header.dataset
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if charge_budget:
        declared = [
            frames,
            int(dataset.get("Rows", 0)),
            int(dataset.get("Columns", 0)),
            int(dataset.get("SamplesPerPixel", 1) or 1),
        ]
        itemsize = max(1, int(dataset.get("BitsAllocated", 8)) // 8)
        check_decoded_size(declared, itemsize, file_name(header.path))
    pixels: np.ndarray | None = None
    for index, frame in enumerate(_iter_frames(header, frames)):
        if pixels is None:
            pixels = np.empty((frames, *frame.shape), dtype=frame.dtype)
        if frame.shape != pixels.shape[1:]:
            raise ResourceError(
                f"The frames of {file_name(header.path)} decode to different shapes "
                f"({pixels.shape[1:]} and {frame.shape})."
            )
        pixels[index] = frame
    assert pixels is not None  # _iter_frames yields exactly `frames` frames, or raises
    return pixels[0] if frames == 1 else pixels


def _rescaled(
    pixels: np.ndarray, rescales: Sequence[tuple[float, float]], header: _Header
) -> tuple[np.ndarray, np.dtype]:
    """Apply one rescale (or the Modality LUT) to an image or video (colour images are never
    rescaled)."""
    if int(header.get("SamplesPerPixel", 1) or 1) != 1:
        return pixels, pixels.dtype
    if "ModalityLUTSequence" in header.dataset:
        from pydicom.pixels import apply_modality_lut

        mapped = apply_modality_lut(pixels, header.dataset)
        return mapped, mapped.dtype
    out_dtype = _output_dtype(header.dataset, rescales[:1])
    slope, intercept = rescales[0]
    if (slope, intercept) == (1.0, 0.0):
        return pixels, pixels.dtype
    if out_dtype.kind == "i" and out_dtype.itemsize > pixels.dtype.itemsize and pixels.size:
        narrow = np.dtype(f"i{pixels.dtype.itemsize}")  # as a volume's: see _read_narrow
        low, high = _rescaled_range(float(pixels.min()), float(pixels.max()), rescales[0])
        if _holds(narrow, low, high):
            result = pixels.astype(narrow)  # the stored bits, wrapped: see _rescale_wrapping
            _rescale_wrapping(result, rescales[0])
            return result, narrow
    result = np.multiply(pixels, slope, dtype=out_dtype, casting="unsafe")
    if intercept:
        np.add(result, intercept, out=result, dtype=out_dtype, casting="unsafe")
    return result, out_dtype


# --- attributes -------------------------------------------------------------------------


def _get(dataset: Any, keyword: str, where: str = "the file") -> Any:
    """An attribute's value, or None; a value pydicom cannot parse is the file's error."""
    try:
        return dataset.get(keyword)
    except Exception as error:  # pydicom converts raw values on first access
        raise ResourceError(
            f"{keyword} of {where} cannot be parsed ({type(error).__name__}); accepted: "
            f"{_ACCEPTED_VALUES.get(keyword, 'a value of its DICOM type')}."
        ) from None


def _values(
    value: Any, keyword: str, count: int, where: str, *, accepted: str | None = None
) -> np.ndarray | None:
    """The numbers of a numeric attribute: ``None`` when absent or empty.

    Raises:
        ResourceError: present, but not ``count`` finite numbers; names the attribute and
            ``where`` (a file name, or a frame of one), never the raw bytes.
    """
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return None
    items = [value] if isinstance(value, (str, bytes, int, float)) else list(value)
    if not items:
        return None
    try:
        numbers = np.array([float(item) for item in items], dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise ResourceError(
            f"{keyword} of {where} holds values that are not numbers; accepted: "
            f"{accepted or _ACCEPTED_VALUES.get(keyword, f'{count} finite numbers')}."
        ) from None
    if numbers.shape != (count,) or not np.isfinite(numbers).all():
        raise _invalid(keyword, where, numbers, accepted=accepted)
    return numbers


def _tag_values(
    dataset: Any, keyword: str, count: int, where: str, *, accepted: str | None = None
) -> np.ndarray | None:
    return _values(_get(dataset, keyword, where), keyword, count, where, accepted=accepted)


def _invalid(
    keyword: str, where: str, values: np.ndarray, *, accepted: str | None = None
) -> ResourceError:
    count = len(values)
    shown = _rounded(values) if count <= 16 else f"{count} values"
    return ResourceError(
        f"{keyword} of {where} is {shown} ({count} value{'s' if count != 1 else ''}); "
        f"accepted: {accepted or _ACCEPTED_VALUES.get(keyword, 'finite numbers')}."
    )


def _orientation(value: Any, where: str) -> np.ndarray | None:
    """ImageOrientationPatient checked: two unit directions, perpendicular (or None)."""
    values = _values(value, "ImageOrientationPatient", 6, where)
    if values is None:
        return None
    row, column = values[:3], values[3:]
    row_length, column_length = float(np.linalg.norm(row)), float(np.linalg.norm(column))
    lengths = row_length * column_length
    cosine = float(row @ column) / lengths if lengths else 1.0
    if (
        abs(row_length - 1) > _UNIT_LENGTH_TOLERANCE
        or abs(column_length - 1) > _UNIT_LENGTH_TOLERANCE
        or abs(cosine) > _PERPENDICULAR_TOLERANCE
    ):
        raise ResourceError(
            f"ImageOrientationPatient of {where} is {_rounded(values)}: row direction of "
            f"length {row_length:.4g}, column direction of length {column_length:.4g}, cosine "
            f"between them {cosine:.4g}; accepted: {_ACCEPTED_VALUES['ImageOrientationPatient']}."
        )
    return values


def _spacing(value: Any, keyword: str, where: str) -> tuple[float, float] | None:
    values = _values(value, keyword, 2, where)
    if values is None:
        return None
    if not (values > 0).all():
        raise _invalid(keyword, where, values)
    return (float(values[0]), float(values[1]))


def _pixel_spacing(dataset: Any, where: str) -> tuple[float, float] | None:
    """PixelSpacing (else ImagerPixelSpacing), checked: two finite, positive numbers."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = _spacing(_get(dataset, keyword, where), keyword, where)
        if spacing is not None:
            return spacing
    return None


def _length(dataset: Any, keyword: str, where: str) -> float | None:
    """SliceThickness or SpacingBetweenSlices, checked: one finite, positive number."""
    values = _tag_values(dataset, keyword, 1, where)
    if values is None:
        return None
    if not values[0] > 0:
        raise _invalid(keyword, where, values)
    return float(values[0])


def _count(dataset: Any, keyword: str, where: str, default: int | None = None) -> int:
    """A positive integer attribute (Rows, NumberOfFrames, ...); ``default`` when absent."""
    value = _get(dataset, keyword, where)
    if value is None or (isinstance(value, str) and not value.strip()):
        if default is None:
            raise ResourceError(
                f"{where} has no {keyword}; accepted: a DICOM image declaring Rows, Columns "
                "and BitsAllocated."
            )
        return default
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = float("nan")
    if keyword == "NumberOfFrames" and number == 0:
        return 1  # some writers put 0 for a single frame
    if not (np.isfinite(number) and number.is_integer() and number >= 1):
        shown = f"{number:g}" if np.isfinite(number) else "not a whole number"
        raise ResourceError(f"{keyword} of {where} is {shown}; accepted: a positive integer.")
    return int(number)


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__getitem__"):
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _rounded(values: Any) -> list[float] | None:
    return None if values is None else [round(float(v), 6) for v in values]


def _modality(header: _Header) -> str | None:
    modality = _described(header.dataset, "Modality")
    return str(modality) if modality else None


def _uid(value: Any) -> str:
    """A UID as text, or ``unknown`` for anything that is not one (never other file text)."""
    text = str(value or "")
    return text if re.fullmatch(r"[0-9.]{1,64}", text) else "unknown"


def _described(dataset: Any, keyword: str) -> Any:
    """A descriptive attribute's value; one pydicom cannot parse is left out (None)."""
    try:
        return dataset.get(keyword)
    except Exception:  # pydicom converts raw values on first access
        _logger.debug("Left out %s: its value cannot be parsed", keyword)
        return None


def _json_value(value: Any) -> Any:
    """A DICOM value as JSON: numbers, strings, lists of them."""
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        if isinstance(value, float) or type(value).__name__ in ("DSfloat", "DSdecimal"):
            return float(value)
        if isinstance(value, int):
            return int(value)
        return str(value)
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_json_value(item) for item in value]
    return str(value)


def _metadata(
    header: _Header, sop_instance_uids: Sequence[Any], rescale: tuple[float, float]
) -> dict[str, Any]:
    dataset = header.dataset
    metadata: dict[str, Any] = {"format": "dicom", "space": WORLD_FRAME}
    for keyword in _METADATA_KEYWORDS:
        value = _described(dataset, keyword)
        if value not in (None, ""):
            metadata[keyword] = _json_value(value)
    for keyword in ("WindowCenter", "WindowWidth"):
        value = _float(_described(dataset, keyword))
        if value is not None and np.isfinite(value):
            metadata[keyword] = value
    if "ModalityLUTSequence" in dataset:
        metadata["ModalityLUTApplied"] = True  # the values are the LUT's, not rescaled
    elif _modality(header) == "RTDOSE" and "DoseGridScaling" in dataset:
        metadata["DoseGridScaling"] = rescale[0]  # applied: the values are in DoseUnits
    else:
        metadata["RescaleSlope"], metadata["RescaleIntercept"] = rescale
    metadata["SOPInstanceUIDs"] = [str(uid) for uid in sop_instance_uids if uid]
    return metadata
