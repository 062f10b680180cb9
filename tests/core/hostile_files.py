"""Hypothesis strategies for hostile medical files, built from the test files pydicom and
nibabel ship (never downloaded).

Each strategy draws either an honest file (its true geometry known, to compare with what the
reader returns) or one with a single lie: a geometry attribute with a NaN, an infinity, the
wrong number of values, text that is not a number, a degenerate direction, a spacing of 0 or
below, a header declaring far more data than the file holds. A case says which attribute
lies and in which file, so that a test can check the error names both.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from tests.core.dicom_files import nibabel_file, pydicom_file

NUMBER = st.floats(-1e3, 1e3, allow_nan=False).map(lambda value: round(value, 4))
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
#: A value with a single defect; ``count`` is how many the attribute must hold.
DEFECTS = ("non_finite", "wrong_count", "not_a_number")


def rotation(draw: st.DrawFn) -> np.ndarray:
    """A random rotation (columns orthonormal), rounded as DICOM's DS text keeps it."""
    quaternion = np.array(draw(st.lists(st.floats(-1, 1), min_size=4, max_size=4)))
    if np.linalg.norm(quaternion) < 0.1:
        quaternion = np.array([1.0, 0.0, 0.0, 0.0])
    w, x, y, z = quaternion / np.linalg.norm(quaternion)
    matrix = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    return np.round(matrix, 8)


@dataclass
class Lie:
    """The one attribute a hostile case gets wrong: its keyword and the file holding it."""

    keyword: str
    file: str
    value: Any = None  # what to write (a list of floats, or raw text for not_a_number)


@dataclass
class SeriesCase:
    """A DICOM series of 8x8 slices: honest geometry, and at most one lie."""

    orientation: list[float]
    origin: list[float]
    pixel_spacing: list[float]
    step: float
    slices: int
    lie: Lie | None = None
    files: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        return [f"S{index:03d}.dcm" for index in range(self.slices)]


def _defective(draw: st.DrawFn, honest: list[float], defect: str) -> Any:
    values = list(honest)
    if defect == "non_finite":
        values[draw(st.integers(0, len(values) - 1))] = draw(NON_FINITE)
        return values
    if defect == "wrong_count":
        count = draw(st.integers(1, len(values) + 3).filter(lambda n: n != len(values)))
        return (values + [draw(NUMBER) for _ in range(count)])[:count]
    return "\\".join(draw(st.sampled_from(["abc", "1e", "--", "x1"])) for _ in values)


@st.composite
def dicom_series(draw: st.DrawFn) -> SeriesCase:
    """An honest series with a random orientation, position, spacing and step, or the same
    series with one lie in one slice."""
    matrix = rotation(draw)
    case = SeriesCase(
        orientation=[*matrix[:, 0], *matrix[:, 1]],
        origin=[draw(NUMBER) for _ in range(3)],
        pixel_spacing=[draw(st.floats(0.1, 5).map(lambda v: round(v, 4))) for _ in range(2)],
        step=draw(st.floats(0.5, 5).map(lambda v: round(v, 4))),
        slices=draw(st.integers(2, 4)),
    )
    if draw(st.booleans()):
        return case
    keyword = draw(
        st.sampled_from(["ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"])
    )
    target = draw(st.sampled_from(case.names()))
    index = case.names().index(target)
    honest = {
        "ImageOrientationPatient": case.orientation,
        "ImagePositionPatient": _position(case, index),
        "PixelSpacing": case.pixel_spacing,
    }[keyword]
    kinds = list(DEFECTS)
    if keyword == "ImageOrientationPatient":
        kinds += ["parallel", "not_unit", "zero"]
    if keyword == "PixelSpacing":
        kinds += ["not_positive"]
    if keyword == "ImagePositionPatient":
        kinds += ["same_position"]
    defect = draw(st.sampled_from(kinds))
    row, column = matrix[:, 0], matrix[:, 1]
    if defect == "parallel":
        value = [*row, *(row * draw(st.sampled_from([1.0, -1.0])))]
    elif defect == "not_unit":
        value = [*(row * draw(st.sampled_from([0.5, 2.0, 1.1]))), *column]
    elif defect == "zero":
        value = [0.0, 0.0, 0.0, *column]
    elif defect == "not_positive":
        value = [draw(st.sampled_from([0.0, -0.5, -1.0])), case.pixel_spacing[1]]
    elif defect == "same_position":
        value = "same"
    else:
        value = _defective(draw, list(honest), defect)
    case.lie = Lie(keyword, target, value)
    return case


def _position(case: SeriesCase, index: int) -> list[float]:
    normal = np.cross(case.orientation[:3], case.orientation[3:])
    return list(np.asarray(case.origin) + index * case.step * normal)


def write_dicom_series(directory: Path, case: SeriesCase) -> np.ndarray:
    """Write ``case`` from CT_small.dcm's header; return the honest LPS affine it describes."""
    import pydicom
    from pydicom.uid import generate_uid

    directory.mkdir(parents=True, exist_ok=True)
    source = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    series_uid = generate_uid()
    names = case.names()
    for index, name in enumerate(names):
        dataset = source.copy()
        dataset.Rows = dataset.Columns = 8
        dataset.PixelData = (np.arange(64, dtype=np.int16) + index).tobytes()
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.ImageOrientationPatient = case.orientation
        dataset.ImagePositionPatient = _position(case, index)
        dataset.PixelSpacing = case.pixel_spacing
        raw = None
        if case.lie is not None and case.lie.file == name:
            value = case.lie.value
            if value == "same":
                other = index - 1 if index else index + 1
                dataset.ImagePositionPatient = _position(case, other)
            elif isinstance(value, str):
                raw = value  # text that is not a number: written byte for byte below
            else:
                setattr(dataset, case.lie.keyword, value)
        path = directory / name
        dataset.save_as(path, enforce_file_format=True)
        if raw is not None:
            write_raw_text(path, case.lie.keyword, raw)  # type: ignore[union-attr]
    lps = np.eye(4)
    normal = np.cross(case.orientation[:3], case.orientation[3:])
    lps[:3, 0] = normal * case.step
    lps[:3, 1] = np.asarray(case.orientation[3:]) * case.pixel_spacing[0]
    lps[:3, 2] = np.asarray(case.orientation[:3]) * case.pixel_spacing[1]
    lps[:3, 3] = case.origin
    return lps


def write_raw_text(path: Path, keyword: str, text: str) -> None:
    """Put ``text`` as the value of a top-level DS attribute, byte for byte (pydicom itself
    refuses to write a DS that is not a number). Explicit VR little endian only."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    marker = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"DS"
    data = Path(path).read_bytes()
    at = data.index(marker, 132)
    (length,) = struct.unpack("<H", data[at + 6 : at + 8])
    value = text.encode("ascii")
    value += b" " * (len(value) % 2)
    Path(path).write_bytes(
        data[: at + 6] + struct.pack("<H", len(value)) + value + data[at + 8 + length :]
    )


@dataclass
class DoseCase:
    """pydicom's rtdose.dcm (15 frames of 10x10 uint32 dose) with at most one lie."""

    lie: Lie | None
    frames: int = 15
    changes: dict[str, Any] = field(default_factory=dict)


@st.composite
def rt_dose(draw: st.DrawFn) -> DoseCase:
    """rtdose.dcm as it is, or with one lie: a NumberOfFrames, Rows or Columns far beyond
    its pixel data, a GridFrameOffsetVector, an orientation, a position, a PixelSpacing or a
    DoseGridScaling that is not valid."""
    if draw(st.booleans()):
        return DoseCase(lie=None)
    keyword = draw(
        st.sampled_from(
            [
                "NumberOfFrames",
                "Rows",
                "GridFrameOffsetVector",
                "ImageOrientationPatient",
                "ImagePositionPatient",
                "PixelSpacing",
                "DoseGridScaling",
            ]
        )
    )
    honest: dict[str, list[float]] = {
        "GridFrameOffsetVector": [5.0 * i for i in range(15)],
        "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        "ImagePositionPatient": [189.43, 199.43, -761.87],
        "PixelSpacing": [10.0, 10.0],
        "DoseGridScaling": [1e-6],
    }
    if keyword in ("NumberOfFrames", "Rows"):
        most = 2**31 - 1 if keyword == "NumberOfFrames" else 2**16 - 1  # IS, US
        value: Any = draw(st.integers(16, most))
        return DoseCase(Lie(keyword, "rtdose.dcm", value), changes={keyword: value})
    defect = draw(st.sampled_from([*DEFECTS, "not_positive"]))
    if defect == "not_positive" and keyword in ("PixelSpacing", "DoseGridScaling"):
        value = [draw(st.sampled_from([0.0, -1.0])), *honest[keyword][1:]]
    elif defect == "not_positive":
        value = _defective(draw, honest[keyword], "non_finite")
    else:
        value = _defective(draw, honest[keyword], defect)
    return DoseCase(Lie(keyword, "rtdose.dcm", value), changes={keyword: value})


def write_rt_dose(directory: Path, case: DoseCase) -> Path:
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    dataset = pydicom.dcmread(pydicom_file("rtdose.dcm"))
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # for write_raw_text
    raw = None
    for keyword, value in case.changes.items():
        if isinstance(value, str):
            raw = (keyword, value)
        else:
            setattr(dataset, keyword, value)
    path = directory / "rtdose.dcm"
    directory.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    if raw is not None:
        write_raw_text(path, *raw)
    return path


@dataclass
class NiftiCase:
    """nibabel's standard.nii.gz header over a small volume, with at most one lie."""

    lie: str | None  # the header field that lies
    fields: dict[str, Any]
    truncate_to: int | None = None
    compressed: bool = False


_NIFTI_LIES = ("dim", "pixdim", "srow", "qform", "truncated")


@st.composite
def nifti_files(draw: st.DrawFn) -> NiftiCase:
    """An honest NIfTI (sform, qform or neither) or one lying in dim, pixdim, the sform rows,
    the qform quaternion, or holding fewer voxels than declared."""
    compressed = draw(st.booleans())
    form = draw(st.sampled_from(["sform", "qform", "none"]))
    fields: dict[str, Any] = {"form": form}
    if draw(st.booleans()):
        return NiftiCase(None, fields, compressed=compressed)
    lie = draw(st.sampled_from(_NIFTI_LIES))
    if lie == "dim":
        fields["dim"] = draw(
            st.one_of(
                st.lists(st.integers(2**10, 2**15 - 1), min_size=3, max_size=3),
                st.lists(st.integers(-5, 0), min_size=3, max_size=3),
            )
        )
    elif lie == "pixdim":
        fields["form"] = draw(st.sampled_from(["qform", "none"]))  # the forms using pixdim
        fields["pixdim"] = [
            draw(st.sampled_from([0.0, -1.0, math.nan, math.inf])) for _ in range(3)
        ]
    elif lie == "srow":
        fields["form"] = "sform"
        fields["srow"] = draw(st.sampled_from(["nan", "inf", "zero_column", "parallel"]))
    elif lie == "qform":
        fields["form"] = "qform"
        fields["quatern"] = [draw(st.sampled_from([math.nan, math.inf, 2.0])) for _ in range(3)]
    truncate = draw(st.integers(0, 200)) if lie == "truncated" else None
    return NiftiCase(lie, fields, truncate_to=truncate, compressed=compressed)


def write_nifti(directory: Path, case: NiftiCase) -> tuple[Path, np.ndarray]:
    """Write ``case``; return the path and its honest voxel-to-RAS affine (nibabel's)."""
    import gzip

    import nibabel

    template = nibabel.load(nibabel_file("standard.nii.gz"))
    header = template.header.copy()
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.int16)
    form = case.fields["form"]
    affine = np.array(
        [[2.0, 0.0, 0.0, -10.0], [0.0, 3.0, 0.0, 20.0], [0.0, 0.0, 4.0, 5.0], [0, 0, 0, 1]]
    )
    image = nibabel.Nifti1Image(data, None, header)
    image.set_sform(affine, code=1 if form == "sform" else 0)
    image.set_qform(affine, code=1 if form == "qform" else 0)
    if form == "none":
        image.header.set_zooms((2.0, 3.0, 4.0))
    image.header["vox_offset"] = 352  # right after the header and its 4 extension bytes
    honest = image.header.get_best_affine()
    raw = bytearray(image.header.binaryblock) + b"\0" * 4 + data.tobytes(order="F")
    structure = image.header.structarr
    if "dim" in case.fields:
        raw[40:56] = struct.pack("<8h", 3, *case.fields["dim"], 1, 1, 1, 1)
    if "pixdim" in case.fields:
        pixdim = list(structure["pixdim"])
        pixdim[1:4] = case.fields["pixdim"]
        raw[76:108] = struct.pack("<8f", *pixdim)
    if "quatern" in case.fields:
        raw[256:268] = struct.pack("<3f", *case.fields["quatern"])
    if "srow" in case.fields:
        rows = np.array(affine[:3], dtype=np.float32)
        kind = case.fields["srow"]
        if kind == "nan":
            rows[1, 1] = np.nan
        elif kind == "inf":
            rows[0, 3] = np.inf
        elif kind == "zero_column":
            rows[:, 2] = 0.0
        else:
            rows[:, 1] = rows[:, 0]
        raw[280:328] = rows.astype("<f4").tobytes()
    if case.truncate_to is not None:
        raw = raw[: 352 + case.truncate_to]
    name = "case.nii.gz" if case.compressed else "case.nii"
    path = directory / name
    directory.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(bytes(raw)) if case.compressed else bytes(raw))
    return path, honest


# -- single hostile files, by name ------------------------------------------------------------


def png_bytes(width: int, height: int, idat: bytes) -> bytes:
    """A grayscale 8-bit PNG whose IHDR says ``width`` x ``height``, over ``idat``."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def lying_png() -> bytes:
    """About 100 bytes declaring 100000 x 100000 pixels (10 GB)."""
    return png_bytes(100_000, 100_000, zlib.compress(b"\0" * 1000))


def large_png() -> bytes:
    """An honest 20000 x 20000 (400-megapixel) grayscale PNG of zeros, about 400 kB."""
    compressor = zlib.compressobj(9)
    row = b"\0" * 20_001
    idat = b"".join(compressor.compress(row) for _ in range(20_000)) + compressor.flush()
    return png_bytes(20_000, 20_000, idat)


def many_frames_dicom(path: Path, *, compressed: bool = False) -> Path:
    """CT_small.dcm declaring 400,000 frames of 512 x 512 over a few bytes of pixel data."""
    import pydicom

    dataset = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    dataset.NumberOfFrames = 400_000
    dataset.Rows = dataset.Columns = 512
    if compressed:
        from pydicom.encaps import encapsulate
        from pydicom.uid import RLELossless

        dataset.PixelData = encapsulate([b"\0" * 16])
        dataset["PixelData"].VR = "OB"
        dataset.file_meta.TransferSyntaxUID = RLELossless
    else:
        dataset.PixelData = b"\0" * 64
    dataset.save_as(path)
    return path


def short_nifti(path: Path) -> Path:
    """A 16^3 float32 NIfTI missing its last 100 bytes (gzip-compressed for ``.nii.gz``)."""
    import gzip
    import io

    import nibabel

    buffer = io.BytesIO()
    image = nibabel.Nifti1Image(np.ones((16, 16, 16), np.float32), np.eye(4))
    file_map = image.make_file_map({"image": buffer, "header": buffer})
    image.to_file_map(file_map)
    data = buffer.getvalue()[:-100]
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


# -- enhanced multi-frame: per-frame functional groups ------------------------------------------

ENHANCED_FRAMES = 4


@dataclass
class EnhancedCase:
    """The first frames of nibabel's enhanced Philips MR, with at most one lie in the
    functional groups of one frame (``Lie.file`` is the file; ``frame`` the frame, from 1)."""

    lie: Lie | None
    frame: int = 1


@st.composite
def enhanced_mr(draw: st.DrawFn) -> EnhancedCase:
    """An honest enhanced MR, or one whose frame carries a plane position, orientation,
    pixel spacing or rescale slope that is not valid, or no plane position at all."""
    if draw(st.booleans()):
        return EnhancedCase(lie=None)
    frame = draw(st.integers(1, ENHANCED_FRAMES))
    keyword = draw(
        st.sampled_from(
            ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope"]
        )
    )
    honest = {
        "ImagePositionPatient": [-90.0, 120.0, 100.0],
        "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        "PixelSpacing": [1.0, 1.0],
        "RescaleSlope": [2.5],
    }[keyword]
    kinds = ["non_finite", "wrong_count"]
    kinds += {
        "ImagePositionPatient": ["missing"],
        "ImageOrientationPatient": ["parallel", "turned"],
        "PixelSpacing": ["not_positive", "different"],
        "RescaleSlope": ["zero"],
    }[keyword]
    defect = draw(st.sampled_from(kinds))
    if defect == "missing":
        value: Any = None
    elif defect == "parallel":
        value = [1.0, 0.0, 0.0, -1.0, 0.0, 0.0]
    elif defect == "turned":
        value = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # valid, but not the other frames' plane
    elif defect == "not_positive":
        value = [draw(st.sampled_from([0.0, -2.0])), 1.0]
    elif defect == "different":
        value = [2.0, 2.0]
    elif defect == "zero":
        value = [0.0]
    else:
        value = _defective(draw, honest, defect)
    return EnhancedCase(Lie(keyword, "enhanced.dcm", value), frame=frame)


_SEQUENCE_OF = {
    "ImagePositionPatient": "PlanePositionSequence",
    "ImageOrientationPatient": "PlaneOrientationSequence",
    "PixelSpacing": "PixelMeasuresSequence",
    "RescaleSlope": "PixelValueTransformationSequence",
}


def write_enhanced_mr(directory: Path, case: EnhancedCase, source: str) -> Path:
    """Write ``case`` from ``source`` (the unpacked Philips MPRAGE), cut to a few frames."""
    import io

    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(_enhanced_template(source)))
    frames = dataset.PerFrameFunctionalGroupsSequence
    if case.lie is not None:
        item = frames[case.frame - 1][_SEQUENCE_OF[case.lie.keyword]][0]
        if case.lie.value is None:
            del item[case.lie.keyword]
        else:
            setattr(item, case.lie.keyword, case.lie.value)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "enhanced.dcm"
    dataset.save_as(path)
    return path


@functools.lru_cache(maxsize=1)
def _enhanced_template(source: str) -> bytes:
    """The first :data:`ENHANCED_FRAMES` frames of ``source``, as the bytes of one file."""
    import io

    import pydicom

    dataset = pydicom.dcmread(source)
    dataset.PerFrameFunctionalGroupsSequence = dataset.PerFrameFunctionalGroupsSequence[
        :ENHANCED_FRAMES
    ]
    dataset.NumberOfFrames = ENHANCED_FRAMES
    frame_bytes = int(dataset.Rows) * int(dataset.Columns) * 2
    dataset.PixelData = dataset.PixelData[: ENHANCED_FRAMES * frame_bytes]
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()
