"""The readers of datamint_core.io on real files: pydicom's and nibabel's test data, series
written with pydicom, and SimpleITK reading the same files as the reference for geometry."""

from __future__ import annotations

import json
import shutil
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from datamint_core import ImageResource, ResourceError, VideoResource, VolumeResource
from datamint_core.io import detect_format, read, read_dicom, read_image, read_nifti
from datamint_core.io.geometry import LPS_TO_RAS
from tests.core.dicom_files import (
    nibabel_file,
    philips_multiframe,
    pydicom_file,
    write_series,
)

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")
sitk = pytest.importorskip("SimpleITK")


@pytest.fixture(autouse=True)
def _quiet_pydicom():
    # pydicom warns about quirks of its own deliberately odd test files.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="pydicom")
        yield


@pytest.fixture(scope="module")
def multiframe(tmp_path_factory: pytest.TempPathFactory) -> str:
    return philips_multiframe(tmp_path_factory.mktemp("multiframe"))


def _sitk_read(path: str):
    if Path(path).is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(path))
        return reader.Execute()
    return sitk.ReadImage(path)


def _assert_same_geometry(volume: VolumeResource, image) -> None:
    """Origin, spacing and direction agree with SimpleITK's (x, y, z) = (W, H, D), in LPS."""
    lps = LPS_TO_RAS @ volume.affine
    np.testing.assert_allclose(lps[:3, 3], image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(volume.spacing, image.GetSpacing()[::-1], rtol=1e-5)
    directions = lps[:3, :3] / np.asarray(volume.spacing)[None, :]
    sitk_direction = np.asarray(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(directions, sitk_direction[:, ::-1], atol=1e-5)


@pytest.mark.parametrize(
    "source",
    [
        "series:dicomdirtests/98892001/CT5N",
        "volume:CT_small.dcm",
        "file:rtdose.dcm",
        "multiframe",
        "nifti:anatomical.nii",
        "nifti:standard.nii.gz",
        "nifti:reoriented_anat_moved.nii",
    ],
)
def test_geometry_and_voxels_agree_with_simpleitk_on_real_files(source, multiframe):
    kind, _, name = source.partition(":")
    if kind == "multiframe":
        path = multiframe
    elif kind == "nifti":
        path = nibabel_file(name)
    else:
        path = pydicom_file(name)
    volume = read(path, kind="volume")
    reference = _sitk_read(path)
    assert isinstance(volume, VolumeResource)
    _assert_same_geometry(volume, reference)
    expected = sitk.GetArrayFromImage(reference)
    if volume.modality == "RTDOSE":  # SimpleITK gives stored values; the dose is scaled
        expected = expected * float(pydicom.dcmread(path).DoseGridScaling)
    assert volume.pixels.shape == expected.shape
    np.testing.assert_allclose(volume.pixels, expected, rtol=1e-6)
    assert volume.metadata["space"] == "RAS"


def test_a_ct_file_reads_as_an_image_with_spacing_rescaled_values_and_json_metadata():
    path = pydicom_file("CT_small.dcm")
    dataset = pydicom.dcmread(path)
    image = read(path)
    assert isinstance(image, ImageResource)
    assert image.pixels.shape == (128, 128)
    assert image.spacing == pytest.approx((0.661468, 0.661468))
    assert image.modality == "CT"
    # Intercept -1024 on 16-bit signed values: the values this file holds still fit int16.
    assert image.pixels.dtype == np.int16
    expected = dataset.pixel_array.astype(np.int32) * int(dataset.RescaleSlope) + int(
        dataset.RescaleIntercept
    )
    np.testing.assert_array_equal(image.pixels, expected)
    metadata = json.loads(json.dumps(image.metadata))
    assert metadata["SeriesInstanceUID"] == dataset.SeriesInstanceUID
    assert metadata["SOPInstanceUIDs"] == [dataset.SOPInstanceUID]
    assert metadata["RescaleIntercept"] == -1024.0


def test_a_decimal_rescale_gives_float_values_equal_to_pydicoms_modality_lut():
    import nibabel as nib
    from pydicom.pixels import apply_rescale

    path = str(Path(nib.__file__).parent / "nicom" / "tests" / "data" / "decimal_rescale.dcm")
    dataset = pydicom.dcmread(path)
    image = read(path)
    expected = apply_rescale(dataset.pixel_array, dataset)
    np.testing.assert_allclose(image.pixels, expected, rtol=1e-6)
    assert image.metadata["RescaleSlope"] == float(dataset.RescaleSlope)


def test_a_shuffled_series_is_ordered_along_the_normal_not_by_name_or_instance_number(
    tmp_path: Path,
):
    truth = write_series(tmp_path / "series", 12, seed=3)
    volume = read_dicom(tmp_path / "series")
    np.testing.assert_array_equal(volume.pixels, truth.astype(np.int32) - 1024)
    assert volume.spacing == pytest.approx((1.25, 0.661468, 0.661468))
    # The first slice (lowest along +z, the normal of this orientation) is the origin.
    np.testing.assert_allclose(volume.affine[:3, 3], [100.0, 120.0, 50.0])
    _assert_same_geometry(volume, _sitk_read(str(tmp_path / "series")))


def test_a_series_stepping_against_its_normal_on_tilted_slices_matches_simpleitk(
    tmp_path: Path,
):
    # Rows along (cos, sin, 0), columns along -z: the normal is in the x-y plane, and the
    # files step the other way along it, so the reader must reverse them.
    angle = np.deg2rad(30)
    orientation = (np.cos(angle), np.sin(angle), 0.0, 0.0, 0.0, -1.0)
    normal = np.cross(orientation[:3], orientation[3:])
    step = tuple(-2.0 * normal)
    truth = write_series(tmp_path / "tilted", 9, orientation=orientation, step=step, seed=5)
    volume = read(tmp_path / "tilted")
    np.testing.assert_array_equal(volume.pixels, truth[::-1].astype(np.int32) - 1024)
    assert volume.spacing == pytest.approx((2.0, 0.661468, 0.661468))
    _assert_same_geometry(volume, _sitk_read(str(tmp_path / "tilted")))


def test_a_directory_mixing_series_is_refused_naming_each_series():
    directory = pydicom_file("dicomdirtests/98892003/MR2")
    with pytest.raises(ResourceError) as error:
        read(directory)
    message = str(error.value)
    assert "mixes 3 DICOM series" in message
    for uid in (
        "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.136",
        "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.17",
        "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.481",
    ):
        assert uid in message
    assert "put each series in its own directory" in message


def test_two_volumes_of_one_series_at_the_same_positions_are_refused(tmp_path: Path):
    uid = "1.2.826.0.1.3680043.8.498.1"
    write_series(tmp_path, 3, series_uid=uid, names=["a1.dcm", "a2.dcm", "a3.dcm"])
    write_series(tmp_path, 3, series_uid=uid, names=["b1.dcm", "b2.dcm", "b3.dcm"], seed=9)
    with pytest.raises(ResourceError, match="lie at the same position along the slice normal"):
        read(tmp_path)


def test_slices_of_different_orientations_are_refused():
    with pytest.raises(ResourceError, match="do not share one orientation"):
        read(pydicom_file("dicomdirtests/98892003/MR700"))


def test_an_enhanced_multiframe_file_reads_as_a_volume_with_per_frame_rescale(multiframe):
    dataset = pydicom.dcmread(multiframe)
    volume = read(multiframe)
    assert isinstance(volume, VolumeResource)
    assert volume.pixels.shape == (176, 256, 256)
    assert volume.pixels.dtype == np.float32
    assert volume.pixels.flags.c_contiguous
    slope = float(
        dataset.PerFrameFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleSlope
    )
    # Frames come out ordered along the normal; which stored frame is slice 0 follows from
    # the positions, so compare through SimpleITK's ordering in the geometry test and here
    # against the stored frames' own rescale.
    stored = dataset.pixel_array.astype(np.float64) * slope
    assert np.allclose(np.sort(volume.pixels.ravel())[::4099], np.sort(stored.ravel())[::4099])


def test_a_multiframe_file_without_positions_reads_as_a_video():
    video = read(pydicom_file("examples_ybr_color.dcm"))
    assert isinstance(video, VideoResource)
    assert video.pixels.shape == (30, 240, 320, 3)
    assert video.modality == "US"


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
    ],
)
def test_compressed_and_big_endian_files_read_the_same_pixels_as_the_plain_one(name):
    plain = read(pydicom_file("MR_small.dcm")).pixels
    other = read(pydicom_file(name)).pixels
    assert other.dtype == plain.dtype and other.dtype.isnative
    np.testing.assert_array_equal(other, plain)


def test_a_big_endian_nifti_reads_native_and_contiguous_with_the_same_values():
    path = nibabel_file("anatomical.nii")
    image = nibabel.load(path)
    assert image.header.endianness == ">"
    volume = read_nifti(path)
    assert volume.pixels.dtype == np.int16 and volume.pixels.dtype.isnative
    assert volume.pixels.flags.c_contiguous
    assert volume.pixels.shape == image.shape[::-1]
    np.testing.assert_array_equal(volume.pixels, np.asarray(image.dataobj).transpose(2, 1, 0))
    # (d, h, w) = (k, j, i): the affine's columns are nibabel's, reordered.
    np.testing.assert_allclose(volume.affine[:, :3], image.affine[:, [2, 1, 0]])


def test_nii_and_nii_gz_of_the_same_volume_read_identically(tmp_path: Path):
    image = nibabel.load(nibabel_file("anatomical.nii"))
    nibabel.save(image, tmp_path / "copy.nii.gz")
    plain, packed = read(nibabel_file("anatomical.nii")), read(tmp_path / "copy.nii.gz")
    np.testing.assert_array_equal(plain.pixels, packed.pixels)
    np.testing.assert_allclose(plain.affine, packed.affine)


def test_png_and_jpeg_read_grayscale_and_rgb_with_their_pixel_spacing(tmp_path: Path):
    from PIL import Image

    gray = (np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 50).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "gray.png", dpi=(254, 127))
    rgb = np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=95, dpi=(100, 100))

    image = read_image(tmp_path / "gray.png")
    np.testing.assert_array_equal(image.pixels, gray)
    # 254 dpi across (columns) is 0.1 mm; 127 dpi down (rows) is 0.2 mm.
    assert image.spacing == pytest.approx((0.2, 0.1), rel=1e-3)
    assert read(tmp_path / "rgb.png").pixels.shape == (20, 24, 3)
    np.testing.assert_array_equal(read(tmp_path / "rgb.png").pixels, rgb)
    jpeg = read(tmp_path / "rgb.jpg")
    assert jpeg.pixels.shape == (20, 24, 3) and jpeg.mimetype == "image/jpeg"
    assert jpeg.spacing == pytest.approx((0.254, 0.254), rel=1e-3)
    assert read(tmp_path / "rgb.png").spacing is None


def test_resources_built_from_a_path_read_the_file_and_its_geometry_on_first_use(
    tmp_path: Path,
):
    nifti = nibabel_file("standard.nii.gz")
    volume = VolumeResource(path=nifti, id="std")
    assert not volume.is_loaded
    assert volume.spacing == pytest.approx((2.0, 3.0, 1.0))  # reading the geometry reads it
    assert volume.is_loaded and volume.pixels.shape == (7, 5, 4)
    assert volume.metadata["format"] == "nifti"

    given = VolumeResource(path=nifti, spacing=(1, 1, 1), metadata={"site": "A"})
    assert given.spacing == (1.0, 1.0, 1.0)  # what the caller says wins
    assert given.metadata["site"] == "A" and given.metadata["space"] == "RAS"

    one_slice = VolumeResource(path=pydicom_file("CT_small.dcm"))
    assert one_slice.pixels.shape == (1, 128, 128) and one_slice.affine is not None

    from PIL import Image

    Image.fromarray(np.zeros((5, 6), np.uint8)).save(tmp_path / "a.png")
    assert ImageResource(path=tmp_path / "a.png").pixels.shape == (5, 6)
    with pytest.raises(ResourceError, match="cannot be read as 'image'"):
        ImageResource(path=pydicom_file("dicomdirtests/98892001/CT5N")).pixels


def test_the_json_form_of_a_path_resource_keeps_the_path_without_reading_the_file():
    volume = VolumeResource(path=nibabel_file("standard.nii.gz"))
    data = volume.to_dict(pixel_encoding="none")
    assert data == {"kind": "volume", "path": nibabel_file("standard.nii.gz")}
    assert not volume.is_loaded
    full = volume.to_dict()
    assert full["spacing"] == [2.0, 3.0, 1.0] and full["metadata"]["format"] == "nifti"


def test_a_slice_of_a_volume_carries_the_in_plane_spacing():
    volume = VolumeResource(np.zeros((4, 5, 6)), spacing=(2.5, 0.8, 0.7))
    assert volume.get_slice(1).spacing == (0.8, 0.7)
    assert volume.get_slice(1, "coronal").spacing == (2.5, 0.7)
    assert volume.get_slice(1, "sagittal").spacing == (2.5, 0.8)


def _rescaled_series(
    directory: Path, stored: np.ndarray, bits_stored: int, rescales: list[tuple[int, int]]
) -> Path:
    """A series of ``stored`` (int16 or uint16) slices, slice ``k`` with ``rescales[k]``."""
    source = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    directory.mkdir(parents=True)
    series_uid = pydicom.uid.generate_uid()
    for index, (pixels, (slope, intercept)) in enumerate(zip(stored, rescales, strict=True)):
        dataset = source.copy()
        dataset.Rows, dataset.Columns = pixels.shape
        dataset.BitsStored, dataset.HighBit = bits_stored, bits_stored - 1
        dataset.PixelRepresentation = int(stored.dtype.kind == "i")
        dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = pydicom.uid.generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.ImagePositionPatient = [0.0, 0.0, 2.0 * index]
        dataset.PixelData = pixels.tobytes()
        dataset.save_as(directory / f"S{index:03d}.dcm", enforce_file_format=True)
    return directory


@st.composite
def _stored_series(draw: st.DrawFn) -> tuple[np.ndarray, int, list[tuple[int, int]]]:
    signed = draw(st.booleans())
    bits_stored = draw(st.sampled_from([12, 16]))
    low, high = (
        (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1)
        if signed
        else (
            0,
            2**bits_stored - 1,
        )
    )
    dtype = np.int16 if signed else np.uint16
    # Values near the stored range's ends and near zero, where int16 does and does not fit.
    value = st.one_of(
        st.integers(low, high),
        st.integers(max(low, -2000), min(high, 4000)),
        st.sampled_from([low, high, 0]),
    )
    slices = draw(st.integers(1, 3))
    stored = draw(arrays(dtype, (slices, 3, 4), elements=value))
    rescale = st.tuples(
        st.sampled_from([1, 1, 2, -1, 3]), st.sampled_from([0, -1024, 1024, -32768, 32767])
    )
    rescales = draw(st.lists(rescale, min_size=slices, max_size=slices))
    if draw(st.booleans()):
        rescales = [rescales[0]] * slices
    return stored, bits_stored, rescales


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=_stored_series())
def test_an_integer_rescale_keeps_16_bits_exactly_when_every_rescaled_value_fits_them(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[np.ndarray, int, list[tuple[int, int]]]
):
    stored, bits_stored, rescales = case
    directory = _rescaled_series(
        Path(tmp_path_factory.mktemp("rescaled")) / "series", stored, bits_stored, rescales
    )
    volume = read(directory, kind="volume")
    slopes = np.array([slope for slope, _ in rescales], dtype=np.int64)[:, None, None]
    intercepts = np.array([intercept for _, intercept in rescales], dtype=np.int64)[:, None, None]
    expected = stored.astype(np.int64) * slopes + intercepts
    np.testing.assert_array_equal(volume.pixels.astype(np.int64), expected)
    identity = all(rescale == (1, 0) for rescale in rescales)
    fits = -(2**15) <= expected.min() and expected.max() < 2**15
    if identity:
        assert volume.pixels.dtype == stored.dtype
    elif fits:
        assert volume.pixels.dtype == np.int16
    else:
        assert volume.pixels.dtype in (np.int32, np.float32)
    # pydicom's own rescale of each file agrees (SimpleITK refuses some of these ranges:
    # "Pixel type larger than output type"; it is compared on a real CT range below).
    from pydicom.pixels import apply_rescale

    for index, pixels in enumerate(volume.pixels):
        dataset = pydicom.dcmread(directory / f"S{index:03d}.dcm")
        np.testing.assert_array_equal(pixels, apply_rescale(dataset.pixel_array, dataset))


def _sitk_series(directory: Path):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(directory)))
    return reader.Execute()


def test_a_ct_series_whose_hounsfield_values_fit_16_bits_is_read_as_int16_like_simpleitks_values(
    tmp_path: Path,
):
    truth = write_series(tmp_path / "ct", 6, size=48, seed=2)
    volume = read(tmp_path / "ct")
    assert volume.pixels.dtype == np.int16  # int16 stored, intercept -1024, values that fit
    assert volume.pixels.flags.owndata
    np.testing.assert_array_equal(volume.pixels, truth.astype(np.int32) - 1024)
    np.testing.assert_array_equal(
        volume.pixels, sitk.GetArrayFromImage(_sitk_series(tmp_path / "ct"))
    )


def test_a_series_is_read_into_one_contiguous_volume_without_a_second_copy(tmp_path: Path):
    write_series(tmp_path, 24, size=256)  # an int16 volume: its bytes outweigh 24 headers
    tracemalloc.start()
    try:
        volume = read(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    pixels = volume.pixels
    assert pixels.flags.c_contiguous and pixels.flags.owndata
    # One volume plus one slice of scratch and the parsed headers; a second copy would
    # double it.
    assert peak < 1.35 * pixels.nbytes, (peak, pixels.nbytes)


@pytest.mark.parametrize(
    ("content", "suffix", "expected"),
    [
        (b"", ".dcm", "not a DICOM file"),
        (b"\x00" * 200, ".dcm", "not a DICOM file"),
        (b"hello world, not an image", ".txt", "Cannot tell the format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, ".png", "Cannot read"),
        (b"\x1f\x8b\x08\x00garbage", ".nii.gz", "Cannot read"),
    ],
)
def test_unreadable_files_get_a_resource_error_saying_what_is_accepted(
    tmp_path: Path, content: bytes, suffix: str, expected: str
):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    with pytest.raises(ResourceError, match=expected):
        read(path)


def test_a_missing_path_and_a_wrong_reader_are_reported_clearly(tmp_path: Path):
    with pytest.raises(ResourceError, match="no such file or directory"):
        read(tmp_path / "missing.nii.gz")
    with pytest.raises(ResourceError, match="is nifti, not dicom"):
        read_dicom(nibabel_file("standard.nii.gz"))
    assert detect_format(nibabel_file("standard.nii.gz")) == "nifti"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ResourceError, match="holds no DICOM file with pixel data"):
        read(empty)


@pytest.mark.parametrize(
    ("blocked", "reader", "extra"),
    [
        ("pydicom", "read(ct)", "dicom"),
        ("nibabel", "read(nifti)", "nifti"),
        ("PIL", "read_image(png)", "images"),
    ],
)
def test_a_missing_extra_fails_when_used_naming_the_pip_command(
    run_python, tmp_path: Path, blocked: str, reader: str, extra: str
):
    png = tmp_path / "a.png"
    png.write_bytes(
        bytes.fromhex(
            "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
            "3a7e9b550000000a49444154789c63600000000200015e2ea3fb0000000049454e44ae426082"
        )
    )
    out = run_python(
        f"""
        import sys
        sys.modules[{blocked!r}] = None   # as if the package were not installed
        from datamint_core.io import read, read_image
        png, ct = {str(png)!r}, {pydicom_file("CT_small.dcm")!r}
        nifti = {nibabel_file("standard.nii.gz")!r}
        try:
            {reader}
        except ImportError as error:
            print(error)
        """
    )
    assert f'pip install "datamint[{extra}]"' in out


def test_importing_the_core_and_its_io_module_loads_no_reader_package(run_python):
    out = run_python(
        "import sys, datamint_core, datamint_core.io\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydicom', 'nibabel', 'PIL', 'highdicom', 'SimpleITK', 'pylibjpeg')))"
    )
    assert out.strip() == "[]"


def test_a_copied_series_reads_the_same_from_any_directory_name(tmp_path: Path):
    source = pydicom_file("dicomdirtests/98892001/CT5N")
    shutil.copytree(source, tmp_path / "renamed")
    for index, path in enumerate(sorted((tmp_path / "renamed").iterdir())):
        path.rename(path.with_name(f"{9 - index}.dcm"))
    np.testing.assert_array_equal(read(tmp_path / "renamed").pixels, read(source).pixels)


def test_the_io_module_exports_exactly_its_readers():
    import datamint_core.io

    assert sorted(datamint_core.io.__all__) == [
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


def test_descriptor_and_geometry_fields_can_be_set_after_construction():
    volume = VolumeResource(path=nibabel_file("standard.nii.gz"))
    volume.modality = "MR"
    volume.spacing = (1, 2, 3)
    assert volume.modality == "MR" and volume.spacing == (1.0, 2.0, 3.0)
    assert volume.metadata["format"] == "nifti"  # the file still fills what was not set
    with pytest.raises(ResourceError, match="expected three positive numbers"):
        volume.spacing = (1, 2)


def test_a_small_file_declaring_a_huge_volume_is_refused_before_its_pixels_are_read(
    tmp_path: Path,
):
    from datamint_core import InputTooLargeError
    from datamint_core._limits import request_limits

    # A NIfTI header declaring 2048^3 float64 voxels (64 GiB), with almost no data behind it.
    header = nibabel.Nifti1Header()
    header.set_data_shape((2048, 2048, 2048))
    header.set_data_dtype(np.float64)
    header["vox_offset"] = 352
    path = tmp_path / "huge.nii"
    with open(path, "wb") as file:
        file.write(header.binaryblock + b"\0" * 4 + b"\0" * 64)
    assert path.stat().st_size < 1024

    tracemalloc.start()
    try:
        with pytest.raises(ResourceError, match=r"'huge.nii' declares dim \[2048, 2048, 2048\]"):
            read_nifti(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20

    # The budget is configurable: a lower one refuses a real file that a default one reads.
    with request_limits(max_decoded_bytes=1000), pytest.raises(InputTooLargeError, match="1000"):
        read(nibabel_file("anatomical.nii"))
    with request_limits(max_decoded_bytes=1000), pytest.raises(InputTooLargeError):
        read(pydicom_file("CT_small.dcm"))
