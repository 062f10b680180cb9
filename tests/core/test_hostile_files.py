"""Malformed and hostile medical files through ``datamint_core.io.read``: generated from the
test files pydicom and nibabel ship, one lie at a time.

The invariant, for every generated file: a volume whose geometry is the honest one (checked
against SimpleITK for DICOM series and nibabel for NIfTI), or a ``ResourceError`` naming the
attribute that lies and the file holding it; never another exception, never a volume with
other geometry, and bounded memory and CPU whatever size a header declares.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamint_core import InputTooLargeError, RequestDeadlineExceeded, ResourceError, VolumeResource
from datamint_core._limits import RequestLimits, applying
from datamint_core.io import read
from datamint_core.io.geometry import LPS_TO_RAS, nifti_to_dhw
from tests.core import hostile_files
from tests.core.dicom_files import pydicom_file, write_series

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")
sitk = pytest.importorskip("SimpleITK")
Image = pytest.importorskip("PIL.Image")

PROPERTY = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(autouse=True)
def _quiet_readers():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="pydicom|nibabel")
        warnings.filterwarnings("ignore", message=".*not evenly spaced.*")
        yield


def _fresh(root: Path, name: str) -> Path:
    directory = root / name
    shutil.rmtree(directory, ignore_errors=True)
    return directory


def read_unless_it_lies(path: Path, lie: hostile_files.Lie | None, root: Path):
    """Read ``path``; where the case lies, assert instead that reading it fails at once with
    a ResourceError naming the attribute and the file (its name, never where it lies)."""
    if lie is None:
        return read(path)
    started = time.process_time()
    with pytest.raises(ResourceError) as raised:
        read(path)
    message = str(raised.value)
    assert lie.keyword in message and repr(lie.file) in message, message
    assert str(root) not in message and "\n" not in message, message
    assert time.process_time() - started < 1.0  # refused from the header
    return None


# -- DICOM series -------------------------------------------------------------------------


@PROPERTY
@given(case=hostile_files.dicom_series())
def test_a_series_reads_with_its_true_geometry_or_names_the_attribute_and_slice_that_lie(
    tmp_path_factory: pytest.TempPathFactory, case: hostile_files.SeriesCase
):
    root = tmp_path_factory.getbasetemp() / "series-property"
    directory = _fresh(root, "series")
    honest_lps = hostile_files.write_dicom_series(directory, case)
    volume = read_unless_it_lies(directory, case.lie, root)
    if volume is None:
        return
    assert isinstance(volume, VolumeResource)
    assert volume.pixels.shape == (case.slices, 8, 8)
    np.testing.assert_allclose(LPS_TO_RAS @ volume.affine, honest_lps, atol=1e-4)
    reference = _sitk_series(directory)
    lps = LPS_TO_RAS @ volume.affine
    np.testing.assert_allclose(lps[:3, 3], reference.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(volume.spacing, reference.GetSpacing()[::-1], rtol=1e-4)
    directions = lps[:3, :3] / np.asarray(volume.spacing)[None, :]
    sitk_direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(directions, sitk_direction[:, ::-1], atol=1e-4)
    np.testing.assert_array_equal(volume.pixels, sitk.GetArrayFromImage(reference))


def _sitk_series(directory: Path):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(directory)))
    return reader.Execute()


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        ([1, 0, 0, 0, float("nan"), 0], r"ImageOrientationPatient of 'S000.dcm' is \[1.0, 0.0, "),
        ([1, 0, 0, 0, 1], r"ImageOrientationPatient of 'S000.dcm' is .*\(5 values\)"),
        ([1, 0, 0, 1, 0, 0], "cosine between them 1"),
    ],
)
def test_the_reported_orientations_are_refused_instead_of_reading_the_first_slice_only(
    tmp_path: Path, orientation: list[float], expected: str
):
    case = hostile_files.SeriesCase(
        orientation=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        origin=[0.0, 0.0, 0.0],
        pixel_spacing=[0.5, 0.5],
        step=2.0,
        slices=3,
        lie=hostile_files.Lie("ImageOrientationPatient", "S000.dcm", orientation),
    )
    hostile_files.write_dicom_series(tmp_path / "ct", case)
    with pytest.raises(ResourceError, match=expected):
        read(tmp_path / "ct")


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        ([1, 0, 0, 0, float("nan"), 0], r"ImageOrientationPatient of 'one.dcm' is \[1.0, 0.0, "),
        ([1, 0, 0, 0, 1], r"ImageOrientationPatient of 'one.dcm' is .*\(5 values\)"),
        ([1, 0, 0, 0, 2, 0], "column direction of length 2,"),
        ([1, 0, 0, 1, 0, 0], "cosine between them 1"),
    ],
)
def test_a_single_image_refuses_an_orientation_a_series_would_refuse(
    tmp_path: Path, orientation: list[float], expected: str
):
    dataset = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    dataset.ImageOrientationPatient = orientation
    dataset.save_as(tmp_path / "one.dcm")
    for kind in ("image", "volume"):
        with pytest.raises(ResourceError, match=expected):
            read(tmp_path / "one.dcm", kind=kind)


def test_a_negative_pixel_spacing_is_refused_instead_of_becoming_one_millimetre(tmp_path: Path):
    case = hostile_files.SeriesCase(
        orientation=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        origin=[0.0, 0.0, 0.0],
        pixel_spacing=[0.5, 0.5],
        step=2.0,
        slices=3,
        lie=hostile_files.Lie("PixelSpacing", "S001.dcm", [-0.5, 0.0]),
    )
    hostile_files.write_dicom_series(tmp_path / "ct", case)
    with pytest.raises(
        ResourceError,
        match=r"PixelSpacing of 'S001.dcm' is \[-0.5, 0.0\] \(2 values\); accepted: two "
        r"finite, positive numbers \(mm\)",
    ):
        read(tmp_path / "ct")


def test_a_single_file_checks_its_spacing_and_slice_thickness(tmp_path: Path):
    dataset = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    dataset.SpacingBetweenSlices = 0
    dataset.save_as(tmp_path / "flat.dcm")
    with pytest.raises(ResourceError, match="SpacingBetweenSlices of 'flat.dcm' is \\[0.0\\]"):
        read(tmp_path / "flat.dcm", kind="volume")
    del dataset.SpacingBetweenSlices  # the slice step falls back to SliceThickness
    dataset.SliceThickness = -5
    dataset.save_as(tmp_path / "thin.dcm")
    with pytest.raises(ResourceError, match="SliceThickness of 'thin.dcm' is \\[-5.0\\]"):
        read(tmp_path / "thin.dcm", kind="volume")
    dataset = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    dataset.PixelSpacing = [0.5, float("inf")]
    dataset.save_as(tmp_path / "far.dcm")
    with pytest.raises(ResourceError, match="PixelSpacing of 'far.dcm' is \\[0.5, inf\\]"):
        read(tmp_path / "far.dcm")


# -- multi-frame DICOM: RT dose -------------------------------------------------------------


@PROPERTY
@given(case=hostile_files.rt_dose())
def test_an_rt_dose_reads_scaled_with_its_grid_or_names_the_attribute_that_lies(
    tmp_path_factory: pytest.TempPathFactory, case: hostile_files.DoseCase
):
    root = tmp_path_factory.getbasetemp() / "dose-property"
    directory = _fresh(root, "dose")
    path = hostile_files.write_rt_dose(directory, case)
    volume = read_unless_it_lies(path, case.lie, root)
    if volume is None:
        return
    reference = sitk.ReadImage(str(path))
    stored = sitk.GetArrayFromImage(reference)
    np.testing.assert_allclose(volume.pixels, stored * 1e-6, rtol=1e-6)
    np.testing.assert_allclose(volume.spacing, reference.GetSpacing()[::-1], rtol=1e-5)
    assert volume.metadata["DoseUnits"] == "RELATIVE"
    assert volume.metadata["DoseGridScaling"] == pytest.approx(1e-6)


def test_an_rt_dose_grid_is_in_dose_units_and_says_which(tmp_path: Path):
    path = pydicom_file("rtdose.dcm")
    dataset = pydicom.dcmread(path)
    volume = read(path)
    assert volume.modality == "RTDOSE"
    assert volume.pixels.dtype == np.float32
    expected = dataset.pixel_array.astype(np.float64) * float(dataset.DoseGridScaling)
    np.testing.assert_allclose(volume.pixels, expected, rtol=1e-6)
    assert volume.metadata["DoseUnits"] == "RELATIVE"
    assert volume.metadata["DoseType"] == "PHYSICAL"
    assert volume.metadata["DoseGridScaling"] == pytest.approx(1e-6)
    assert "RescaleSlope" not in volume.metadata  # no Modality LUT in an RT dose

    dataset.DoseUnits = "GY"
    dataset.DoseGridScaling = 0.5
    dataset.save_as(tmp_path / "gy.dcm")
    in_gray = read(tmp_path / "gy.dcm")
    np.testing.assert_allclose(in_gray.pixels, dataset.pixel_array * 0.5, rtol=1e-6)
    assert in_gray.metadata["DoseUnits"] == "GY"


def test_an_absolute_grid_frame_offset_vector_gives_the_same_grid_as_the_relative_one(
    tmp_path: Path,
):
    dataset = pydicom.dcmread(pydicom_file("rtdose.dcm"))
    z = float(dataset.ImagePositionPatient[2])
    dataset.GridFrameOffsetVector = [z + float(v) for v in dataset.GridFrameOffsetVector]
    dataset.save_as(tmp_path / "absolute.dcm")
    relative = read(pydicom_file("rtdose.dcm"))
    absolute = read(tmp_path / "absolute.dcm")
    np.testing.assert_allclose(absolute.affine, relative.affine)
    dataset.GridFrameOffsetVector = [7.0 + 5 * i for i in range(15)]
    dataset.save_as(tmp_path / "neither.dcm")
    with pytest.raises(ResourceError, match="GridFrameOffsetVector of 'neither.dcm' starts at 7"):
        read(tmp_path / "neither.dcm")


def test_a_per_frame_sequence_that_does_not_match_the_frames_is_refused(tmp_path: Path):
    from tests.core.dicom_files import philips_multiframe

    dataset = pydicom.dcmread(philips_multiframe(tmp_path))
    del dataset.PerFrameFunctionalGroupsSequence[-1]
    dataset.save_as(tmp_path / "short.dcm")
    with pytest.raises(
        ResourceError, match="NumberOfFrames=176 but its PerFrameFunctionalGroupsSequence has 175"
    ):
        read(tmp_path / "short.dcm")
    dataset = pydicom.dcmread(philips_multiframe(tmp_path))
    plane = dataset.PerFrameFunctionalGroupsSequence[9].PlanePositionSequence[0]
    plane.ImagePositionPatient = [0.0, float("nan"), 1.0]
    dataset.save_as(tmp_path / "nan.dcm")
    with pytest.raises(
        ResourceError, match=r"ImagePositionPatient of frame 10 of 'nan.dcm' is \[0.0, nan, 1.0\]"
    ):
        read(tmp_path / "nan.dcm")


# -- NIfTI --------------------------------------------------------------------------------

_NIFTI_WORDS = {
    "dim": ("dim",),
    "pixdim": ("pixdim",),
    "srow": ("sform", "srow"),
    "qform": ("qform", "quatern"),
    "truncated": ("dim", "voxels"),
}


@PROPERTY
@given(case=hostile_files.nifti_files())
def test_a_nifti_reads_with_its_affine_or_names_the_header_field_that_lies(
    tmp_path_factory: pytest.TempPathFactory, case: hostile_files.NiftiCase
):
    root = tmp_path_factory.getbasetemp() / "nifti-property"
    path, honest = hostile_files.write_nifti(_fresh(root, "nifti"), case)
    tracemalloc.start()
    try:
        try:
            volume = read(path)
        except ResourceError as error:
            _, peak = tracemalloc.get_traced_memory()
            assert case.lie is not None, error
            message = str(error)
            assert repr(path.name) in message and str(root) not in message, message
            assert any(word in message for word in _NIFTI_WORDS[case.lie]), message
            assert peak < 8 * 2**20, peak  # whatever size the header declares
            return
    finally:
        tracemalloc.stop()
    assert case.lie in (None, "pixdim"), case  # pixdim lies only where nibabel uses it
    assert case.lie is None or case.fields["form"] == "sform"
    np.testing.assert_allclose(volume.affine, nifti_to_dhw(honest), atol=1e-5)
    assert volume.pixels.shape == (6, 5, 4)


def test_a_nifti_declaring_more_voxels_than_it_holds_is_a_resource_error_not_an_os_error(
    tmp_path: Path,
):
    short = hostile_files.short_nifti(tmp_path / "short.nii")
    with pytest.raises(ResourceError, match=r"'short.nii' declares dim \[16, 16, 16\]"):
        read(short)
    short_gz = hostile_files.short_nifti(tmp_path / "short.nii.gz")
    with pytest.raises(ResourceError, match=r"Cannot read the voxels of 'short.nii.gz'"):
        read(short_gz)


# -- PNG and JPEG ---------------------------------------------------------------------------


def test_a_png_declaring_more_pixels_than_it_can_hold_is_refused_before_decoding(
    tmp_path: Path,
):
    path = tmp_path / "bomb.png"
    path.write_bytes(hostile_files.lying_png())
    tracemalloc.start()
    started = time.process_time()
    try:
        with pytest.raises(ResourceError, match=r"'bomb.png' declares IHDR 100000x100000 pixels"):
            read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20 and time.process_time() - started < 0.5


def test_a_400_megapixel_png_is_the_decode_budget_error_not_pillows_bomb_error(tmp_path: Path):
    path = tmp_path / "large.png"
    path.write_bytes(hostile_files.large_png())
    with applying(RequestLimits(max_decoded_bytes=64 * 2**20)):  # a server request's budget
        with pytest.raises(InputTooLargeError, match="--max-decoded-bytes"):
            read(path)


# -- sizes declared against what a file holds ------------------------------------------------


@pytest.mark.parametrize(
    ("compressed", "expected"),
    [
        (False, r"'frames.dcm' declares NumberOfFrames=400000 of Rows=512 x Columns=512"),
        (True, r"'frames.dcm' declares NumberOfFrames=400000, but its compressed pixel data"),
    ],
)
def test_a_tiny_dicom_declaring_400000_frames_is_refused_at_once(
    tmp_path: Path, compressed: bool, expected: str
):
    path = hostile_files.many_frames_dicom(tmp_path / "frames.dcm", compressed=compressed)
    assert path.stat().st_size < 8192
    tracemalloc.start()
    started = time.process_time()
    try:
        with pytest.raises(ResourceError, match=expected):
            read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.process_time() - started < 0.3  # was ~6 CPU-seconds before the size check
    assert peak < 8 * 2**20  # of the 200 GB declared


def test_a_series_stops_at_the_request_deadline_between_slices(tmp_path: Path):
    write_series(tmp_path / "ct", 4, size=16)
    with applying(RequestLimits(deadline=time.monotonic() - 1)):
        with pytest.raises(RequestDeadlineExceeded):
            read(tmp_path / "ct")
    assert read(tmp_path / "ct").pixels.shape == (4, 16, 16)  # outside a request: no deadline


# -- no message quotes a file's bytes --------------------------------------------------------

SECRET = b"root:x:0:0:root:/root:/bin/bash\nsecret-token-4f2a\n"
_SUFFIXES = ["", ".dcm", ".nii", ".nii.gz", ".png", ".jpg", ".npy", ".npz", ".txt"]
_MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\x93NUMPY", b"PK\x03\x04", b"\x1f\x8b"]


@PROPERTY
@given(
    suffix=st.sampled_from(_SUFFIXES),
    magic=st.sampled_from(_MAGIC),
    body=st.binary(max_size=200),
    linked=st.booleans(),
)
def test_no_reader_error_quotes_the_files_bytes_or_its_directory(
    tmp_path_factory: pytest.TempPathFactory, suffix: str, magic: bytes, body: bytes, linked: bool
):
    root = tmp_path_factory.getbasetemp() / "bytes-property"
    directory = _fresh(root, "files")
    directory.mkdir(parents=True)
    content = magic + SECRET + body
    secret = directory / "secret"
    secret.write_bytes(content)
    path = directory / f"study{suffix}"
    if linked:
        path.symlink_to(secret)
    else:
        path.write_bytes(content)
    try:
        read(path)
    except ResourceError as error:
        message = str(error)
        assert "root:x" not in message and "secret-token" not in message, message
        assert "'secret'" not in message, message  # a link is named by its own name
    else:
        raise AssertionError(f"{path.name} read as a resource")


def test_a_symlink_to_passwd_gets_an_error_without_its_first_bytes(tmp_path: Path):
    link = tmp_path / "study"
    link.symlink_to("/etc/passwd")
    with pytest.raises(ResourceError) as raised:
        read(link)
    assert "root" not in str(raised.value) and "b'" not in str(raised.value)
    assert "first bytes match none of the accepted formats" in str(raised.value)


def test_text_that_is_not_a_number_is_left_out_of_metadata_and_named_in_geometry(
    tmp_path: Path,
):
    # A DS value that is not a number in a tag the reader only describes (WindowCenter) is
    # left out; one in a geometry tag is the file's error, named.
    from tests.core.hostile_files import write_raw_text

    dataset = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    dataset.WindowCenter = 40
    dataset.save_as(tmp_path / "window.dcm")
    write_raw_text(tmp_path / "window.dcm", "WindowCenter", "zz")
    assert "WindowCenter" not in read(tmp_path / "window.dcm").metadata
    shutil.copy(tmp_path / "window.dcm", tmp_path / "spacing.dcm")
    write_raw_text(tmp_path / "spacing.dcm", "PixelSpacing", "ab\\cd")
    with pytest.raises(
        ResourceError, match="PixelSpacing of 'spacing.dcm' (cannot be parsed|holds values that)"
    ):
        read(tmp_path / "spacing.dcm")
    assert os.path.exists(tmp_path / "spacing.dcm")


def test_a_modality_lut_is_applied_to_an_image_and_a_volume_using_one_is_refused(
    tmp_path: Path,
):
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_modality_lut

    dataset = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    del dataset.RescaleSlope, dataset.RescaleIntercept  # a LUT replaces the linear rescale
    lut = Dataset()
    stored = dataset.pixel_array
    first, count = int(stored.min()), int(stored.max() - stored.min()) + 1
    lut.LUTDescriptor = [count, first, 16]
    lut.ModalityLUTType = "HU"
    lut.LUTData = (np.arange(count, dtype=np.uint16) * 3 % 4096).astype("<u2").tobytes()
    lut["LUTData"].VR = "OW"
    dataset.ModalityLUTSequence = [lut]
    dataset.save_as(tmp_path / "lut.dcm")
    image = read(tmp_path / "lut.dcm")
    expected = apply_modality_lut(stored, pydicom.dcmread(tmp_path / "lut.dcm"))
    np.testing.assert_array_equal(image.pixels, expected)
    assert image.metadata["ModalityLUTApplied"] is True
    assert "RescaleSlope" not in image.metadata
    with pytest.raises(ResourceError, match="'lut.dcm' maps its stored values with a Modality LUT"):
        read(tmp_path / "lut.dcm", kind="volume")


def test_a_jpeg_whose_frame_header_declares_more_pixels_than_its_data_can_code_is_refused(
    tmp_path: Path,
):
    honest = tmp_path / "honest.jpg"
    Image.fromarray(np.full((64, 48), 90, np.uint8)).save(honest, quality=90)
    data = bytearray(honest.read_bytes())
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65_000, 65_000)
    (tmp_path / "lying.jpg").write_bytes(bytes(data))
    assert read(honest).pixels.shape == (64, 48)
    tracemalloc.start()
    started = time.process_time()
    try:
        with pytest.raises(ResourceError, match=r"'lying.jpg' declares SOF 65000x65000 pixels"):
            read(tmp_path / "lying.jpg")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20 and time.process_time() - started < 0.5  # 4 GB never allocated


def test_compressed_dicom_declaring_more_than_its_data_can_decode_to_is_refused(tmp_path: Path):
    dataset = pydicom.dcmread(pydicom_file("MR_small_RLE.dcm"))
    dataset.Rows = dataset.Columns = 8192  # 128 MB from about 6 kB of RLE: at most 64-fold
    dataset.save_as(tmp_path / "rle.dcm")
    with pytest.raises(ResourceError, match=r"'rle.dcm' declares NumberOfFrames=1 of Rows=8192"):
        read(tmp_path / "rle.dcm")
    assert read(pydicom_file("MR_small_RLE.dcm")).pixels.shape == (64, 64)


def test_a_compressed_multiframe_volume_is_decoded_frame_by_frame_and_stops_at_the_deadline(
    tmp_path: Path,
):
    from pydicom.uid import RLELossless

    from tests.core.dicom_files import philips_multiframe

    native = philips_multiframe(tmp_path)
    dataset = pydicom.dcmread(native)
    dataset.compress(RLELossless)
    dataset.save_as(tmp_path / "rle.dcm")
    expected = read(native)
    tracemalloc.start()
    try:
        volume = read(tmp_path / "rle.dcm")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(volume.pixels, expected.pixels)
    np.testing.assert_allclose(volume.affine, expected.affine)
    # One volume, the compressed data and a frame or two: never a second decoded copy.
    assert peak < 1.5 * volume.pixels.nbytes, (peak, volume.pixels.nbytes)
    with applying(RequestLimits(deadline=time.monotonic() - 1)):
        with pytest.raises(RequestDeadlineExceeded):
            read(tmp_path / "rle.dcm")


@PROPERTY
@given(case=hostile_files.enhanced_mr())
def test_an_enhanced_multiframe_reads_with_its_true_geometry_or_names_the_frame_that_lies(
    tmp_path_factory: pytest.TempPathFactory, case: hostile_files.EnhancedCase
):
    from tests.core.dicom_files import philips_multiframe

    source = philips_multiframe(tmp_path_factory.getbasetemp())
    root = tmp_path_factory.getbasetemp() / "enhanced-property"
    path = hostile_files.write_enhanced_mr(_fresh(root, "enhanced"), case, source)
    volume = read_unless_it_lies(path, case.lie, root)
    if volume is None:
        return
    reference = sitk.ReadImage(str(path))
    lps = LPS_TO_RAS @ volume.affine
    np.testing.assert_allclose(lps[:3, 3], reference.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(volume.spacing, reference.GetSpacing()[::-1], rtol=1e-4)
    assert volume.pixels.shape == (hostile_files.ENHANCED_FRAMES, 256, 256)


def test_a_nifti_cut_inside_its_header_says_the_file_holds_no_voxels_never_a_negative_size(
    tmp_path: Path,
):
    path = tmp_path / "cut.nii"
    nibabel.save(nibabel.Nifti1Image(np.ones((5, 6, 7), np.float32), np.eye(4)), path)
    path.write_bytes(path.read_bytes()[:348])  # the header, without the 4 bytes before voxels
    with pytest.raises(ResourceError, match=r"can hold at most 0 bytes") as caught:
        read(path)
    assert "-4" not in str(caught.value)
