"""Read DICOM: one file, a series directory, or a multi-frame file.

A series directory's slices are ordered by ImagePositionPatient projected on the slice
normal (row x column of ImageOrientationPatient), never by file name or InstanceNumber,
and read straight into one preallocated, contiguous volume: uncompressed pixel data is read
from the file into the volume's memory with no intermediate copy; compressed transfer
syntaxes (JPEG, JPEG 2000, JPEG-LS, RLE) go through pydicom's decoders (pylibjpeg), one
frame at a time. RescaleSlope/RescaleIntercept are applied: the volume keeps the stored
integer type when no rescale is needed, becomes ``int16``/``int32`` when an integer rescale
fits, and ``float32`` otherwise. Geometry follows :mod:`datamint_core.io.geometry` (RAS).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datamint_core.io._decoded import Decoded, check_decoded_size
from datamint_core.io._extras import require
from datamint_core.io.geometry import WORLD_FRAME, dicom_affine, slice_normal
from datamint_core.resources import ResourceError

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
            f"Cannot read {path!r} as DICOM: it is not a DICOM file (no 'DICM' marker and no "
            "readable DICOM header). Accepted: a DICOM file or a directory of one series."
        )
    if "PixelData" not in header.dataset:
        raise ResourceError(
            f"Cannot read {path!r} as an image: the DICOM file has no pixel data "
            f"(SOP class {header.get('SOPClassUID', 'unknown')})."
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
            raise ResourceError(f"Cannot read {path!r} as DICOM: it is not a DICOM file.")
        headers = [header]
    if len(headers) == 1:
        header = _full(headers[0])
        frames = int(header.get("NumberOfFrames", 1) or 1)
        if frames == 1:
            return [header.dataset], None
        orientation, positions, _ = _multiframe_geometry(header.dataset, frames)
        if orientation is None or positions is None:
            raise ResourceError(f"{path!r} is a multi-frame file without frame positions.")
        names = [f"frame {i + 1}" for i in range(frames)]
        return [header.dataset], _order_along_normal(positions, orientation, names, path)
    orientation = _floats(headers[0].get("ImageOrientationPatient"), 6)
    if orientation is None:
        raise ResourceError(f"Cannot order the slices of {path!r}: no ImageOrientationPatient.")
    positions = np.array([_floats(h.get("ImagePositionPatient"), 3) for h in headers])
    order = _order_along_normal(positions, orientation, [h.path for h in headers], path)
    return [_full(headers[i]).dataset for i in order], None


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
        raise ResourceError(f"{header.path!r} changed while it was being read.")
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


def _decode_file(header: _Header, kind: str | None) -> Decoded:
    frames = int(header.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        return _decode_multiframe(header, frames)
    if kind == "volume":
        return _decode_series([header], header.path)
    pixels = _frames_array(header)
    pixels, _ = _rescaled(pixels, [_rescale_of(header.dataset)], header)
    spacing = _pixel_spacing(header.dataset)
    return Decoded(
        pixels=pixels,
        kind="image",
        mimetype="application/dicom",
        spacing=None if spacing is None else (spacing[0], spacing[1]),
        modality=_modality(header),
        metadata=_metadata(header, [header.get("SOPInstanceUID")], _rescale_of(header.dataset)),
    )


def _decode_series(headers: list[_Header], where: str) -> Decoded:
    """Order single-frame files along the slice normal and read them into one volume."""
    for header in headers:
        if int(header.get("NumberOfFrames", 1) or 1) > 1:
            raise ResourceError(
                f"{header.path!r} is a multi-frame file inside a series directory; read "
                "multi-frame files one at a time."
            )
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient"):
            if header.get(keyword) is None and len(headers) > 1:
                raise ResourceError(
                    f"Cannot order the slices of {where!r}: {header.path!r} has no {keyword}. "
                    "A series directory needs ImagePositionPatient and ImageOrientationPatient "
                    "on every slice."
                )
    first = _full(headers[0])
    orientation = _floats(first.get("ImageOrientationPatient"), 6)
    _same_frame_layout(headers, where)
    if orientation is None:
        order = [0]
        positions = np.zeros((1, 3))
    else:
        for header in headers[1:]:
            other = _floats(header.get("ImageOrientationPatient"), 6)
            if other is None or not np.allclose(other, orientation, atol=_ORIENTATION_TOLERANCE):
                raise ResourceError(
                    f"The slices of {where!r} do not share one orientation "
                    f"({os.path.basename(first.path)!r}: {_rounded(orientation)}, "
                    f"{os.path.basename(header.path)!r}: {_rounded(other)}); accepted: one series "
                    "of parallel slices."
                )
        positions = np.array(
            [_floats(h.get("ImagePositionPatient"), 3) for h in headers], dtype=float
        )
        order = _order_along_normal(positions, orientation, [h.path for h in headers], where)
    ordered = [headers[i] for i in order]
    positions = positions[order]
    rescales = [_rescale_of(h.dataset) for h in ordered]
    volume = _read_volume(ordered, rescales)
    spacing2d = _pixel_spacing(first.dataset) or (1.0, 1.0)
    affine = None
    if orientation is not None:
        step = _slice_step(positions, orientation, first.dataset)
        affine = dicom_affine(positions[0], orientation, spacing2d, step)
    return Decoded(
        pixels=volume,
        kind="volume",
        mimetype="application/dicom",
        spacing=_volume_spacing(affine, spacing2d, first.dataset),
        affine=affine,
        modality=_modality(first),
        metadata=_metadata(first, [h.get("SOPInstanceUID") for h in ordered], rescales[0]),
    )


def _decode_multiframe(header: _Header, frames: int) -> Decoded:
    """A multi-frame file: a volume when its frames have positions, else a video."""
    dataset = header.dataset
    orientation, positions, pixel_spacing = _multiframe_geometry(dataset, frames)
    rescales = [_frame_rescale(dataset, index) for index in range(frames)]
    if positions is None or orientation is None:
        pixels = _frames_array(header)
        pixels, _ = _rescaled(pixels, rescales, header)
        return Decoded(
            pixels=pixels,
            kind="video",
            mimetype="application/dicom",
            modality=_modality(header),
            metadata=_metadata(header, [header.get("SOPInstanceUID")], rescales[0]),
        )
    order = _order_along_normal(
        positions, orientation, [f"frame {i + 1}" for i in range(frames)], header.path
    )
    positions = positions[order]
    volume = _read_volume([header] * frames, [rescales[i] for i in order], frame_indices=order)
    pixel_spacing = pixel_spacing or (1.0, 1.0)
    step = _slice_step(positions, orientation, dataset)
    affine = dicom_affine(positions[0], orientation, pixel_spacing, step)
    return Decoded(
        pixels=volume,
        kind="volume",
        mimetype="application/dicom",
        spacing=_volume_spacing(affine, pixel_spacing, dataset),
        affine=affine,
        modality=_modality(header),
        metadata=_metadata(header, [header.get("SOPInstanceUID")], rescales[order[0]]),
    )


def _multiframe_geometry(
    dataset: Any, frames: int
) -> tuple[np.ndarray | None, np.ndarray | None, tuple[float, float] | None]:
    """Orientation, per-frame positions and pixel spacing of a multi-frame file."""
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) == frames:
        orientation = _floats(
            _functional(dataset, 0, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
        )
        positions = [
            _floats(_functional(dataset, i, "PlanePositionSequence", "ImagePositionPatient"), 3)
            for i in range(frames)
        ]
        spacing = _floats(_functional(dataset, 0, "PixelMeasuresSequence", "PixelSpacing"), 2)
        if orientation is None or any(p is None for p in positions):
            return None, None, None
        return orientation, np.array(positions, dtype=float), _pair(spacing)
    # Legacy multi-frame (RT dose, NM): one position, and frame offsets along the normal.
    orientation = _floats(dataset.get("ImageOrientationPatient"), 6)
    origin = _floats(dataset.get("ImagePositionPatient"), 3)
    offsets = dataset.get("GridFrameOffsetVector")
    if orientation is None or origin is None or offsets is None or len(offsets) != frames:
        return None, None, None
    normal = slice_normal(orientation)
    positions = origin[None, :] + np.asarray(offsets, dtype=float)[:, None] * normal[None, :]
    return orientation, positions, _pixel_spacing(dataset)


def _functional(dataset: Any, frame: int, sequence: str, keyword: str) -> Any:
    """A functional-group attribute of one frame: per-frame first, then shared."""
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    groups = [per_frame[frame]] if per_frame is not None else []
    shared = dataset.get("SharedFunctionalGroupsSequence")
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
    gaps = np.diff(projections[order])
    if gaps.size and gaps.min() < _SAME_POSITION_MM:
        at = int(np.argmin(gaps))
        first, second = names[order[at]], names[order[at + 1]]
        raise ResourceError(
            f"Cannot build one volume from {where!r}: {os.path.basename(first)!r} and "
            f"{os.path.basename(second)!r} lie at the same position along the slice normal "
            f"({projections[order[at]]:.3f} mm). The series holds several volumes (echoes, "
            "phases or time points); accepted: one volume per series directory or file."
        )
    if gaps.size > 1 and np.ptp(gaps) > max(0.01 * float(np.median(gaps)), 1e-3):
        warnings.warn(
            f"The slices of {where!r} are not evenly spaced (gaps from {gaps.min():.3f} to "
            f"{gaps.max():.3f} mm; a slice may be missing); the affine uses their mean step.",
            stacklevel=4,
        )
    return [int(i) for i in order]


def _slice_step(positions: np.ndarray, orientation: np.ndarray, dataset: Any) -> np.ndarray:
    if len(positions) > 1:
        return (positions[-1] - positions[0]) / (len(positions) - 1)
    thickness = _float(dataset.get("SpacingBetweenSlices")) or _float(dataset.get("SliceThickness"))
    return slice_normal(orientation) * (thickness or 1.0)


def _volume_spacing(
    affine: np.ndarray | None, pixel_spacing: Sequence[float], dataset: Any
) -> tuple[float, float, float]:
    if affine is not None:
        lengths = np.linalg.norm(affine[:3, :3], axis=0)
        return (float(lengths[0]), float(lengths[1]), float(lengths[2]))
    thickness = _float(dataset.get("SliceThickness")) or 1.0
    return (thickness, float(pixel_spacing[0]), float(pixel_spacing[1]))


def _same_frame_layout(headers: list[_Header], where: str) -> None:
    keys = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "PixelRepresentation")
    first = tuple(headers[0].get(k) for k in keys)
    for header in headers[1:]:
        layout = tuple(header.get(k) for k in keys)
        if layout != first:
            raise ResourceError(
                f"The slices of {where!r} differ in size or pixel format: "
                f"{os.path.basename(headers[0].path)!r} has {dict(zip(keys, first, strict=True))}, "
                f"{os.path.basename(header.path)!r} has {dict(zip(keys, layout, strict=True))}."
            )
    if int(first[2] or 1) != 1:
        raise ResourceError(
            f"{where!r} is a colour series (SamplesPerPixel={first[2]}); volumes are read from "
            "grayscale series only."
        )


# --- pixels -----------------------------------------------------------------------------


def _stored_dtype(dataset: Any) -> np.dtype:
    bits = int(dataset.get("BitsAllocated", 16))
    signed = int(dataset.get("PixelRepresentation", 0)) == 1
    if bits not in (8, 16, 32):
        raise ResourceError(
            f"DICOM BitsAllocated={bits} is not supported; accepted: 8, 16 or 32 bits."
        )
    return np.dtype(f"{'i' if signed else 'u'}{bits // 8}")


def _rescale_of(dataset: Any) -> tuple[float, float]:
    return (
        _float(dataset.get("RescaleSlope")) if "RescaleSlope" in dataset else 1.0,
        _float(dataset.get("RescaleIntercept")) if "RescaleIntercept" in dataset else 0.0,
    )


def _frame_rescale(dataset: Any, frame: int) -> tuple[float, float]:
    slope = _functional(dataset, frame, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _functional(dataset, frame, "PixelValueTransformationSequence", "RescaleIntercept")
    if slope is None and intercept is None:
        return _rescale_of(dataset)
    return (_float(slope) if slope is not None else 1.0, _float(intercept) or 0.0)


def _output_dtype(dataset: Any, rescales: Sequence[tuple[float, float]]) -> np.dtype:
    """The narrowest type that holds every rescaled value exactly (float32 otherwise)."""
    stored = _stored_dtype(dataset)
    if all(slope == 1.0 and intercept == 0.0 for slope, intercept in rescales):
        return stored
    if not all(float(s).is_integer() and float(b).is_integer() for s, b in rescales):
        return np.dtype(np.float32)
    bits_stored = int(dataset.get("BitsStored", stored.itemsize * 8))
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
    """Read frames into one preallocated volume, slot ``k`` from ``headers[k]``."""
    first = headers[0].dataset
    rows, columns = int(first.Rows), int(first.Columns)
    out_dtype = _output_dtype(first, rescales)
    check_decoded_size((len(headers), rows, columns), out_dtype.itemsize, headers[0].path)
    volume = np.empty((len(headers), rows, columns), dtype=out_dtype)
    stored = _stored_dtype(first)
    # Reading into the volume itself works when its type has the stored bytes' meaning.
    direct = out_dtype == stored or (
        out_dtype == np.int16 and stored == np.uint16 and int(first.get("BitsStored", 16)) <= 15
    )
    scratch = None if direct else np.empty((rows, columns), dtype=stored)
    decoded_frames: dict[str, np.ndarray] = {}
    for slot, header in enumerate(headers):
        frame = 0 if frame_indices is None else frame_indices[slot]
        target = volume[slot].view(stored) if direct else scratch
        assert target is not None
        if not _read_native_frame(header, frame, target):
            frames = decoded_frames.get(header.path)
            if frames is None:
                frames = _frames_array(header)
                if frame_indices is not None:
                    decoded_frames[header.path] = frames  # a multi-frame file: decode once
            target[...] = frames[frame] if frames.ndim == 3 else frames
        slope, intercept = rescales[slot]
        if direct and (slope, intercept) == (1.0, 0.0):
            continue
        source = volume[slot] if direct else scratch
        np.multiply(source, slope, out=volume[slot], dtype=out_dtype, casting="unsafe")
        if intercept:
            np.add(volume[slot], intercept, out=volume[slot], dtype=out_dtype, casting="unsafe")
    return volume


def _read_native_frame(header: _Header, frame: int, target: np.ndarray) -> bool:
    """Read one uncompressed frame from the file straight into ``target``; False if not native."""
    dataset = header.dataset
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    byte_order = _NATIVE_SYNTAXES.get(str(syntax)) if syntax is not None else None
    if byte_order is None or int(dataset.get("SamplesPerPixel", 1)) != 1:
        return False
    stored = target.dtype
    bits_stored = int(dataset.get("BitsStored", stored.itemsize * 8))
    if stored.kind == "i" and bits_stored < stored.itemsize * 8:
        return False  # needs sign extension: pydicom's decoder does it
    element = dataset.get_item(_PIXEL_DATA_TAG, keep_deferred=True)
    offset = getattr(element, "value_tell", None)
    if offset is None or getattr(element, "value", None) is not None:
        return False
    frame_bytes = target.nbytes
    if element.length is not None and element.length < (frame + 1) * frame_bytes:
        raise ResourceError(
            f"The pixel data of {header.path!r} is truncated: {element.length} bytes for "
            f"frame {frame + 1} of {frame_bytes} bytes each."
        )
    with open(header.path, "rb") as file:
        file.seek(offset + frame * frame_bytes)
        read = file.readinto(memoryview(target).cast("B"))
    if read != frame_bytes:
        raise ResourceError(f"The pixel data of {header.path!r} is truncated.")
    if byte_order == ">" and stored.itemsize > 1:
        target.byteswap(inplace=True)
    return True


def _frames_array(header: _Header) -> np.ndarray:
    """Decode every frame of a file with pydicom (compressed syntaxes, colour)."""
    dataset = header.dataset
    declared = [
        int(dataset.get("NumberOfFrames", 1) or 1),
        int(dataset.get("Rows", 0)),
        int(dataset.get("Columns", 0)),
        int(dataset.get("SamplesPerPixel", 1)),
    ]
    check_decoded_size(declared, max(1, int(dataset.get("BitsAllocated", 8)) // 8), header.path)
    try:
        pixels = _full(header).dataset.pixel_array
    except Exception as error:  # pydicom raises many types for undecodable pixel data
        syntax = getattr(getattr(header.dataset, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise ResourceError(
            f"Cannot decode the pixel data of {header.path!r} (transfer syntax {name}): "
            f"{error}. Compressed DICOM needs the decoders of the dicom extra: "
            'pip install "datamint[dicom]".'
        ) from None
    return pixels if pixels.dtype.isnative else pixels.astype(pixels.dtype.newbyteorder("="))


def _rescaled(
    pixels: np.ndarray, rescales: Sequence[tuple[float, float]], header: _Header
) -> tuple[np.ndarray, np.dtype]:
    """Apply one rescale to an image or video (colour images are never rescaled)."""
    if int(header.get("SamplesPerPixel", 1)) != 1:
        return pixels, pixels.dtype
    out_dtype = _output_dtype(header.dataset, rescales[:1])
    slope, intercept = rescales[0]
    if (slope, intercept) == (1.0, 0.0):
        return pixels, pixels.dtype
    result = np.multiply(pixels, slope, dtype=out_dtype, casting="unsafe")
    if intercept:
        np.add(result, intercept, out=result, dtype=out_dtype, casting="unsafe")
    return result, out_dtype


# --- attributes -------------------------------------------------------------------------


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__getitem__"):
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _floats(value: Any, count: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        values = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return values if values.shape == (count,) and np.isfinite(values).all() else None


def _rounded(values: np.ndarray | None) -> list[float] | None:
    return None if values is None else [round(float(v), 6) for v in values]


def _pair(values: np.ndarray | None) -> tuple[float, float] | None:
    return None if values is None else (float(values[0]), float(values[1]))


def _pixel_spacing(dataset: Any) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        values = _floats(dataset.get(keyword), 2)
        if values is not None and (values > 0).all():
            return _pair(values)
    return None


def _modality(header: _Header) -> str | None:
    modality = header.get("Modality")
    return str(modality) if modality else None


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
        value = dataset.get(keyword)
        if value not in (None, ""):
            metadata[keyword] = _json_value(value)
    for keyword in ("WindowCenter", "WindowWidth"):
        value = _float(dataset.get(keyword))
        if value is not None:
            metadata[keyword] = value
    metadata["RescaleSlope"], metadata["RescaleIntercept"] = rescale
    metadata["SOPInstanceUIDs"] = [str(uid) for uid in sop_instance_uids if uid]
    return metadata
