"""DICOM headers and their attributes: what a file says, read and checked.

The header a reader keeps per slice (:class:`_Header`, only the attributes ordering and
reading need), the attributes' checked values (orientation, spacing, counts, rescale inputs),
the per-frame functional groups and the metadata a resource carries. No pixels are read here
(:mod:`datamint_core.io._dicom_pixels`); :mod:`datamint_core.io.dicom` puts both together.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datamint_core.errors import ResourceError
from datamint_core.io._checks import file_name
from datamint_core.io.geometry import WORLD_FRAME

_logger = logging.getLogger("datamint_core.io.dicom")

_PIXEL_DATA_TAG = 0x7FE00010
# Values larger than this stay on disk while headers are parsed: the pixel data is then read
# straight into the volume, and nothing else large is parsed for nothing.
_DEFER_SIZE = 4096
_NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2": "<",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": "<",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2": ">",  # Explicit VR Big Endian (retired, still met)
}
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
