"""Resources: building them, slicing them without copies, and their JSON form."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamint_core import ImageResource, ResourceError, VideoResource, VolumeResource
from datamint_core._npy import decode_npy_base64, encode_npy_base64
from datamint_core.wire import RESOURCE_FIELDS, as_resources, resource_from_dict

ACCEPTED_KINDS = "['image', 'video', 'volume']"


def ct_volume() -> np.ndarray:
    """A (D, H, W) = (4, 5, 6) volume: every axis has its own size, so shapes tell axes apart."""
    return np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)


ACCEPTED_FILE = (
    "Accepted: a numeric array written by numpy.save (.npy) or numpy.savez (.npz with one array)."
)


def cannot_read(path) -> str:
    """The start of the message for a pixel file that exists but cannot be read."""
    return re.escape(f"Cannot read pixel data from {str(path)!r}")


def unreadable_file_error(path, reason: str = ".*") -> str:
    """The whole message for a pixel file that exists but cannot be read: why, and what works."""
    return cannot_read(path) + ": " + reason + re.escape(". " + ACCEPTED_FILE) + "$"


def list_pixels(array: list) -> dict:
    return {"encoding": "list", "data": array}


# -- building resources --------------------------------------------------------------------


def test_resource_error_is_a_value_error_so_callers_can_catch_either() -> None:
    assert issubclass(ResourceError, ValueError)


def test_an_image_built_from_an_array_holds_that_array_without_copying() -> None:
    array = np.zeros((8, 9), dtype=np.uint8)

    image = ImageResource(array, id="xr-1", modality="CR")

    assert image.is_loaded
    assert image.pixels is array
    assert image.shape == (8, 9)
    assert (image.id, image.modality, image.metadata) == ("xr-1", "CR", {})


@pytest.mark.parametrize("shape", [(8, 9), (8, 9, 3)], ids=["grey", "rgb"])
def test_an_image_accepts_height_width_with_or_without_channels(shape: tuple[int, ...]) -> None:
    assert ImageResource(np.zeros(shape)).shape == shape


def test_a_volume_built_from_an_array_counts_its_axial_slices() -> None:
    volume = VolumeResource(ct_volume(), id="ct-1")

    assert volume.shape == (4, 5, 6)
    assert volume.num_slices == 4


@pytest.mark.parametrize("shape", [(3, 8, 9), (3, 8, 9, 3)], ids=["grey", "rgb"])
def test_a_video_built_from_an_array_counts_its_frames(shape: tuple[int, ...]) -> None:
    video = VideoResource(np.zeros(shape, dtype=np.uint8))

    assert video.num_frames == 3
    assert video.shape == shape


def test_a_boolean_image_is_accepted() -> None:
    assert ImageResource(np.eye(3, dtype=bool)).pixels.dtype == bool


def test_a_npy_file_is_read_only_when_the_pixels_are_first_used(tmp_path) -> None:
    path = tmp_path / "ct.npy"
    np.save(path, ct_volume())

    volume = VolumeResource(path=path, id="ct-1")

    assert not volume.is_loaded
    assert repr(volume) == f"VolumeResource(id='ct-1', path={str(path)!r})"
    np.testing.assert_array_equal(volume.pixels, ct_volume())
    assert volume.is_loaded
    assert repr(volume) == "VolumeResource(id='ct-1', shape=(4, 5, 6))"


def test_a_npz_file_holding_one_array_is_read_lazily(tmp_path) -> None:
    path = tmp_path / "frame.npz"
    np.savez_compressed(path, pixels=np.full((8, 9), 7, dtype=np.int16))

    image = ImageResource(path=str(path))

    assert not image.is_loaded
    assert image.pixels.dtype == np.int16
    assert image.shape == (8, 9)
    assert image.is_loaded


def test_a_video_can_be_read_from_a_npy_file(tmp_path) -> None:
    path = tmp_path / "echo.npy"
    np.save(path, np.zeros((5, 8, 9, 3), dtype=np.uint8))

    video = VideoResource(path=path)

    assert not video.is_loaded
    assert video.num_frames == 5


@pytest.mark.parametrize(
    ("resource_class", "shape", "accepted"),
    [
        (ImageResource, (9,), "(H, W) or (H, W, C)"),
        (ImageResource, (2, 8, 9, 3), "(H, W) or (H, W, C)"),
        (VolumeResource, (8, 9), "(D, H, W) or (D, H, W, C) with D the axial axis"),
        (VolumeResource, (1, 2, 8, 9, 3), "(D, H, W) or (D, H, W, C) with D the axial axis"),
        (VideoResource, (8, 9), "(T, H, W) or (T, H, W, C)"),
        (VideoResource, (1, 2, 8, 9, 3), "(T, H, W) or (T, H, W, C)"),
    ],
)
def test_pixels_with_the_wrong_number_of_dimensions_are_rejected_with_the_accepted_shapes(
    resource_class: type, shape: tuple[int, ...], accepted: str
) -> None:
    expected = f"has pixel data of shape {shape}; expected {accepted}."

    with pytest.raises(ResourceError, match=re.escape(expected)):
        resource_class(np.zeros(shape))


def test_a_file_with_the_wrong_number_of_dimensions_is_rejected_when_it_is_read(tmp_path) -> None:
    path = tmp_path / "flat.npy"
    np.save(path, np.zeros((8, 9)))
    volume = VolumeResource(path=path, id="ct-1")

    with pytest.raises(
        ResourceError,
        match=re.escape("VolumeResource 'ct-1' has pixel data of shape (8, 9); expected (D, H, W)"),
    ):
        _ = volume.pixels


def test_a_resource_without_an_id_is_named_by_its_class_alone() -> None:
    with pytest.raises(
        ResourceError,
        match="^"
        + re.escape(
            "VolumeResource has pixel data of shape (8, 9); "
            "expected (D, H, W) or (D, H, W, C) with D the axial axis."
        ),
    ):
        VolumeResource(np.zeros((8, 9)))


@pytest.mark.parametrize(
    "array",
    [np.empty((2, 2), dtype=object), np.array([["a", "b"]]), np.array([[b"a", b"b"]])],
    ids=["object", "unicode", "bytes"],
)
def test_pixels_that_are_not_numbers_are_rejected(array: np.ndarray) -> None:
    with pytest.raises(
        ResourceError,
        match=re.escape(
            f"has pixel data of dtype {array.dtype}; expected a numeric or boolean array."
        ),
    ):
        ImageResource(array)


@pytest.mark.parametrize(
    "sources", [{}, {"pixels": np.zeros((2, 2)), "path": "image.npy"}], ids=["neither", "both"]
)
def test_a_resource_needs_exactly_one_pixel_source(sources: dict) -> None:
    with pytest.raises(
        ResourceError,
        match="^"
        + re.escape(
            "ImageResource needs exactly one pixel source: an array (pixels=...) or a "
            "local file (path=...: .npy, .npz, DICOM, NIfTI, PNG or JPEG)."
        ),
    ):
        ImageResource(**sources)


def test_a_resource_with_an_id_and_no_pixel_source_is_named_by_its_id() -> None:
    with pytest.raises(
        ResourceError,
        match="^"
        + re.escape(
            "ImageResource 'xr-1' needs exactly one pixel source: an array (pixels=...) or a "
            "local file (path=...: .npy, .npz, DICOM, NIfTI, PNG or JPEG)."
        ),
    ):
        ImageResource(id="xr-1")


@pytest.mark.parametrize("metadata", ["chest", ["PA"]], ids=["text", "list"])
def test_metadata_that_is_not_an_object_is_rejected(metadata) -> None:
    with pytest.raises(
        ResourceError,
        match=re.escape(f"metadata must be a JSON object (dict), got {type(metadata).__name__}."),
    ):
        ImageResource(np.zeros((2, 2)), metadata=metadata)


def test_a_npz_file_holding_two_arrays_is_rejected_naming_them(tmp_path) -> None:
    path = tmp_path / "two.npz"
    np.savez(path, image=np.zeros((2, 2)), mask=np.ones((2, 2)))

    with pytest.raises(
        ResourceError,
        match=re.escape("holds 2 arrays (['image', 'mask']); a resource file must hold one."),
    ):
        _ = ImageResource(path=path).pixels


def test_a_file_of_an_unknown_format_is_rejected_with_the_accepted_file_types(tmp_path) -> None:
    path = tmp_path / "chest.bmp"
    path.write_bytes(b"BM\x00\x00")
    image = ImageResource(path=path)

    with pytest.raises(
        ResourceError,
        match=re.escape(
            "accepted: a DICOM file (.dcm) or series directory, NIfTI (.nii, .nii.gz), PNG, "
            "JPEG, .npy or .npz."
        ),
    ):
        _ = image.pixels
    assert not image.is_loaded


def test_a_missing_file_is_a_resource_error_naming_the_path(tmp_path) -> None:
    path = tmp_path / "missing.npy"

    with pytest.raises(
        ResourceError,
        match="^" + re.escape(f"Cannot read pixel data from {str(path)!r}: no such file.") + "$",
    ):
        _ = ImageResource(path=path).pixels


@pytest.mark.parametrize("name", ["corrupt.npy", "corrupt.npz"])
def test_a_file_with_garbage_bytes_is_a_resource_error_not_said_to_be_pickled(
    tmp_path, name: str
) -> None:
    path = tmp_path / name
    path.write_bytes(b"this is not a numpy file at all")

    with pytest.raises(ResourceError, match=unreadable_file_error(path)) as raised:
        _ = ImageResource(path=path).pixels
    # numpy takes any file without the .npy/.zip magic for a pickle; the file holds no pickle.
    assert "pickle" not in str(raised.value)
    assert "allow_pickle" not in str(raised.value)


def test_a_npy_file_holding_pickled_objects_is_refused_without_advising_allow_pickle(
    tmp_path,
) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([[{"evil": 1}]], dtype=object), allow_pickle=True)

    with pytest.raises(
        ResourceError,
        match=unreadable_file_error(
            path, re.escape("it holds pickled Python objects, which are never loaded")
        ),
    ) as raised:
        _ = ImageResource(path=path).pixels
    assert "allow_pickle" not in str(raised.value)


def test_a_npz_file_holding_pickled_objects_is_refused_without_advising_allow_pickle(
    tmp_path,
) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, pixels=np.array([[{"evil": 1}]], dtype=object))

    with pytest.raises(
        ResourceError,
        match=re.escape(" (member 'pixels.npy'): it holds pickled Python objects, which are "
                        "never loaded. " + ACCEPTED_FILE) + "$",
    ) as raised:
        _ = ImageResource(path=path).pixels
    assert "allow_pickle" not in str(raised.value)


def test_a_truncated_npy_file_is_a_resource_error_saying_it_is_incomplete(tmp_path) -> None:
    whole = io.BytesIO()
    np.save(whole, np.zeros((50, 50)))
    path = tmp_path / "partial.npy"
    path.write_bytes(whole.getvalue()[:300])

    with pytest.raises(ResourceError, match=unreadable_file_error(path, ".*not fully written.*")):
        _ = ImageResource(path=path).pixels


def test_an_empty_npy_file_is_a_resource_error(tmp_path) -> None:
    path = tmp_path / "empty.npy"
    path.write_bytes(b"")

    with pytest.raises(
        ResourceError,
        match=unreadable_file_error(
            path, re.escape("it is not a .npy file (its first bytes are wrong)")
        ),
    ):
        _ = ImageResource(path=path).pixels


def test_a_truncated_npz_file_is_a_resource_error(tmp_path) -> None:
    whole = io.BytesIO()
    np.savez(whole, pixels=np.zeros((50, 50)))
    path = tmp_path / "partial.npz"
    path.write_bytes(whole.getvalue()[:40])

    with pytest.raises(ResourceError, match=unreadable_file_error(path, "BadZipFile: .*")):
        _ = ImageResource(path=path).pixels


# -- slices and frames are views -----------------------------------------------------------


@pytest.mark.parametrize(
    ("axis", "index", "expected_shape", "select"),
    [
        ("axial", 2, (5, 6), lambda v: v[2]),
        ("coronal", 3, (4, 6), lambda v: v[:, 3]),
        ("sagittal", 5, (4, 5), lambda v: v[:, :, 5]),
    ],
)
def test_a_slice_is_a_view_that_shares_memory_with_the_volume(
    axis: str, index: int, expected_shape: tuple[int, int], select
) -> None:
    array = ct_volume()
    volume = VolumeResource(array, id="ct-1", modality="CT", metadata={"patient": "p1"})

    image = volume.get_slice(index, axis)

    assert isinstance(image, ImageResource)
    assert image.shape == expected_shape
    assert np.shares_memory(image.pixels, array)
    np.testing.assert_array_equal(image.pixels, select(array))
    assert (image.id, image.modality) == ("ct-1", "CT")
    assert image.metadata == {"patient": "p1", "slice_index": index, "slice_axis": axis}


def test_the_default_slice_axis_is_axial() -> None:
    volume = VolumeResource(ct_volume())

    assert volume.get_slice(1).metadata["slice_axis"] == "axial"
    np.testing.assert_array_equal(volume.get_slice(1).pixels, ct_volume()[1])


def test_writing_into_a_slice_writes_into_the_volume() -> None:
    array = ct_volume()

    VolumeResource(array).get_slice(0, "sagittal").pixels[:] = -1

    assert (array[:, :, 0] == -1).all()


def test_slicing_a_volume_read_from_a_file_gives_views_of_the_loaded_pixels(tmp_path) -> None:
    path = tmp_path / "ct.npy"
    np.save(path, ct_volume())
    volume = VolumeResource(path=path)

    image = volume.get_slice(3)

    assert volume.is_loaded
    assert np.shares_memory(image.pixels, volume.pixels)


@pytest.mark.parametrize(
    ("axis", "index", "count"),
    [("axial", 4, 4), ("axial", -1, 4), ("coronal", 5, 5), ("sagittal", 6, 6)],
)
def test_a_slice_index_outside_the_volume_names_the_valid_range(
    axis: str, index: int, count: int
) -> None:
    volume = VolumeResource(ct_volume(), id="ct-1")

    with pytest.raises(
        ValueError,
        match=re.escape(
            f"slice_index={index} is outside VolumeResource 'ct-1' ({count} {axis} slices); "
            f"accepted: an integer from 0 to {count - 1}."
        ),
    ):
        volume.get_slice(index, axis)


def test_a_slice_index_that_is_not_an_integer_is_rejected() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "slice_index=1.0 is outside VolumeResource (4 axial slices); "
            "accepted: an integer from 0 to 3."
        ),
    ):
        VolumeResource(ct_volume()).get_slice(1.0)


def test_an_unknown_slice_axis_names_the_accepted_axes() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Unknown slice axis 'transverse'; accepted axes: ['axial', 'coronal', 'sagittal']."
        ),
    ):
        VolumeResource(ct_volume()).get_slice(0, "transverse")


def test_iter_slices_yields_one_view_per_axial_slice_in_order() -> None:
    array = ct_volume()

    slices = list(VolumeResource(array).iter_slices())

    assert len(slices) == 4
    for index, image in enumerate(slices):
        assert np.shares_memory(image.pixels, array)
        np.testing.assert_array_equal(image.pixels, array[index])
        assert image.metadata["slice_index"] == index


def test_iter_slices_along_coronal_yields_one_view_per_row() -> None:
    assert [image.shape for image in VolumeResource(ct_volume()).iter_slices("coronal")] == [
        (4, 6)
    ] * 5


@pytest.mark.parametrize(
    ("shape", "frame_shape"), [((3, 8, 9), (8, 9)), ((3, 8, 9, 3), (8, 9, 3))], ids=["grey", "rgb"]
)
def test_a_frame_is_a_view_that_shares_memory_with_the_video(
    shape: tuple[int, ...], frame_shape: tuple[int, ...]
) -> None:
    array = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    video = VideoResource(array, id="echo-1")

    frame = video.get_frame(2)

    assert isinstance(frame, ImageResource)
    assert frame.shape == frame_shape
    assert np.shares_memory(frame.pixels, array)
    np.testing.assert_array_equal(frame.pixels, array[2])
    assert frame.metadata == {"frame_index": 2}


def test_iter_frames_yields_one_view_per_frame() -> None:
    array = np.zeros((3, 8, 9), dtype=np.uint8)

    frames = list(VideoResource(array).iter_frames())

    assert [frame.metadata["frame_index"] for frame in frames] == [0, 1, 2]
    assert all(np.shares_memory(frame.pixels, array) for frame in frames)


@pytest.mark.parametrize("index", [3, -1])
def test_a_frame_index_outside_the_video_names_the_valid_range(index: int) -> None:
    video = VideoResource(np.zeros((3, 8, 9)), id="echo-1")

    with pytest.raises(
        ValueError,
        match=re.escape(
            f"frame_index={index} is outside VideoResource 'echo-1' (3 frames); "
            "accepted: an integer from 0 to 2."
        ),
    ):
        video.get_frame(index)


# -- JSON form -----------------------------------------------------------------------------


def sample_resources() -> list:
    rng = np.random.default_rng(7)
    return [
        ImageResource(
            rng.random((6, 7), dtype=np.float32),
            id="xr-1",
            modality="CR",
            filename="chest.dcm",
            mimetype="application/dicom",
            metadata={"view": "PA", "age": 61},
        ),
        ImageResource(rng.integers(0, 255, (6, 7, 3), dtype=np.uint8), id="photo"),
        ImageResource(rng.random((6, 7)) > 0.5, id="mask"),
        VolumeResource(
            rng.integers(-1024, 3000, (4, 6, 7), dtype=np.int16),
            id="ct-1",
            modality="CT",
            spacing=(2.5, 0.7, 0.7),
            affine=np.diag([0.7, 0.7, 2.5, 1]),
        ),
        VolumeResource(rng.random((3, 4, 5)).astype(np.float64), id="mr-1"),
        VideoResource(rng.integers(0, 255, (3, 6, 7, 3), dtype=np.uint8), id="echo-1"),
        VideoResource(rng.random((3, 6, 7), dtype=np.float32), id="us-1", modality="US"),
    ]


@pytest.mark.parametrize("encoding", ["npy_base64", "list"])
@pytest.mark.parametrize("resource", sample_resources(), ids=lambda r: r.id)
def test_every_resource_round_trips_through_json(resource, encoding: str) -> None:
    sent = json.loads(json.dumps(resource.to_dict(pixel_encoding=encoding)))

    received = resource_from_dict(sent)

    assert type(received) is type(resource)
    assert received == resource
    assert received.pixels.dtype == resource.pixels.dtype


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint16, np.bool_])
def test_npy_base64_keeps_the_dtype_and_values_exactly(dtype: type) -> None:
    array = (np.arange(-30, 30).reshape(6, 10) * 1.37).astype(dtype)
    data = ImageResource(array).to_dict()

    assert data["pixel_data"]["encoding"] == "npy_base64"
    received = resource_from_dict(data).pixels
    assert received.dtype == dtype
    np.testing.assert_array_equal(received, array)


def test_the_list_encoding_carries_the_dtype_as_text() -> None:
    data = ImageResource(np.array([[1, -2], [3, 4]], dtype=np.int16)).to_dict(pixel_encoding="list")

    assert data["pixel_data"] == {"encoding": "list", "data": [[1, -2], [3, 4]], "dtype": "int16"}
    assert resource_from_dict(data).pixels.dtype == np.int16


def test_the_json_form_leaves_out_empty_descriptor_fields() -> None:
    data = ImageResource(np.zeros((2, 2)), id="xr-1").to_dict(pixel_encoding="list")

    assert set(data) == {"kind", "id", "pixel_data"}


def test_a_volume_carries_spacing_and_affine_in_json() -> None:
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    volume = VolumeResource(ct_volume(), spacing=(2.5, 0.7, 0.7), affine=affine)

    data = json.loads(json.dumps(volume.to_dict()))

    assert data["spacing"] == [2.5, 0.7, 0.7]
    assert data["affine"] == affine.tolist()
    received = resource_from_dict(data)
    assert received.spacing == (2.5, 0.7, 0.7)
    np.testing.assert_array_equal(received.affine, affine)


@pytest.mark.parametrize(
    ("kind", "field", "expected"),
    [
        ("image", "affine", "'affine' describes volumes; resource 'x' is of kind 'image'."),
        ("video", "affine", "'affine' describes volumes; resource 'x' is of kind 'video'."),
        (
            "video",
            "spacing",
            "'spacing' describes images and volumes; resource 'x' is of kind 'video'.",
        ),
    ],
)
def test_geometry_a_kind_does_not_have_is_rejected(kind: str, field: str, expected: str) -> None:
    value = [1.0, 1.0, 1.0] if field == "spacing" else np.eye(4).tolist()
    data = {
        "kind": kind,
        "id": "x",
        field: value,
        "pixel_data": list_pixels(np.zeros((3, 4, 5)).tolist()),
    }

    with pytest.raises(ResourceError, match=re.escape(expected)):
        resource_from_dict(data)


def test_an_image_carries_its_pixel_spacing_through_json() -> None:
    image = ImageResource(np.zeros((3, 4)), spacing=(0.5, 0.25))
    received = resource_from_dict(image.to_dict())
    assert received.spacing == (0.5, 0.25) and received == image
    with pytest.raises(ResourceError, match=re.escape("expected two positive numbers (H, W)")):
        ImageResource(np.zeros((3, 4)), spacing=(1.0, 1.0, 1.0))


@pytest.mark.parametrize(
    "spacing",
    [(1.0, 1.0), (1.0, -0.5, 1.0), (0, 1, 1), 2.5, ("thick", "thin", "thin")],
    ids=["two-values", "negative", "zero", "a-single-number", "words"],
)
def test_a_volume_spacing_that_is_not_three_positive_numbers_is_rejected(spacing) -> None:
    with pytest.raises(
        ResourceError,
        match=re.escape(
            f"spacing={spacing!r} is not valid; expected three positive numbers (D, H, W) in mm."
        ),
    ):
        VolumeResource(ct_volume(), spacing=spacing)


def test_a_volume_affine_that_is_not_4x4_is_rejected() -> None:
    with pytest.raises(
        ResourceError,
        match=re.escape(
            "affine of shape (3, 3) is not valid; expected a 4x4 matrix of finite numbers."
        ),
    ):
        VolumeResource(ct_volume(), affine=np.eye(3))


@pytest.mark.parametrize("affine", [[["a"] * 4] * 4, [[1, 0], [0]]], ids=["words", "ragged"])
def test_a_volume_affine_that_is_not_a_matrix_of_numbers_is_rejected(affine) -> None:
    with pytest.raises(
        ResourceError, match=re.escape("affine is not valid; expected a 4x4 matrix of numbers.")
    ):
        VolumeResource(ct_volume(), affine=affine)


@pytest.mark.parametrize(
    ("geometry", "expected"),
    [
        (
            {"spacing": (np.inf, 0.7, 0.7)},
            "spacing=(inf, 0.7, 0.7) is not valid; expected three positive numbers",
        ),
        (
            {"spacing": (np.nan, 0.7, 0.7)},
            "spacing=(nan, 0.7, 0.7) is not valid; expected three positive numbers",
        ),
        (
            {"affine": np.full((4, 4), np.nan)},
            "affine of shape (4, 4) is not valid; expected a 4x4 matrix of finite numbers.",
        ),
    ],
    ids=["infinite-spacing", "nan-spacing", "nan-affine"],
)
def test_a_volume_geometry_with_non_finite_numbers_is_rejected(
    geometry: dict, expected: str
) -> None:
    # Segmentation masks stacked from this volume would carry its geometry and reject it.
    with pytest.raises(ResourceError, match=re.escape(expected)):
        VolumeResource(ct_volume(), **geometry)


@pytest.mark.parametrize(
    ("array", "kind"),
    [
        (np.zeros((4, 5)), ImageResource),
        (np.zeros((3, 4, 5)), VolumeResource),
        (np.zeros((2, 3, 4, 5)), VideoResource),
    ],
    ids=["2d-image", "3d-volume", "4d-video"],
)
@pytest.mark.parametrize("encoding", ["npy_base64", "list"])
def test_the_kind_is_inferred_from_the_number_of_dimensions(
    array: np.ndarray, kind: type, encoding: str
) -> None:
    data = array.tolist() if encoding == "list" else encode_npy_base64(array)

    received = resource_from_dict({"pixel_data": {"encoding": encoding, "data": data}})

    assert type(received) is kind
    assert received.shape == array.shape


def test_an_explicit_kind_overrides_the_number_of_dimensions() -> None:
    pixels = list_pixels(np.zeros((3, 4, 5)).tolist())

    assert type(resource_from_dict({"kind": "image", "pixel_data": pixels})) is ImageResource
    assert type(resource_from_dict({"kind": "video", "pixel_data": pixels})) is VideoResource


def test_pixel_data_of_five_dimensions_without_a_kind_is_rejected() -> None:
    with pytest.raises(
        ResourceError,
        match=re.escape(
            "Resource 'x' has 5-D pixel data and no 'kind'; 2-D is an image, 3-D a volume, "
            "4-D a video - or set 'kind' explicitly."
        ),
    ):
        resource_from_dict({"id": "x", "pixel_data": list_pixels(np.zeros((1,) * 5).tolist())})


def test_a_path_without_a_kind_is_rejected_asking_for_one(tmp_path) -> None:
    with pytest.raises(
        ResourceError,
        match=re.escape(
            f"Resource 'ct-1' gives a path but no 'kind'; add 'kind': one of {ACCEPTED_KINDS}."
        ),
    ):
        resource_from_dict({"id": "ct-1", "path": str(tmp_path / "ct.npy")})


def test_a_path_with_a_kind_builds_a_lazy_resource_that_round_trips_without_pixels(
    tmp_path,
) -> None:
    path = tmp_path / "ct.npy"
    np.save(path, ct_volume())

    volume = resource_from_dict({"kind": "volume", "id": "ct-1", "path": str(path)})

    assert isinstance(volume, VolumeResource)
    assert not volume.is_loaded
    data = volume.to_dict(pixel_encoding="none")
    assert data == {"kind": "volume", "id": "ct-1", "path": str(path)}
    assert not volume.is_loaded
    assert resource_from_dict(data) == volume


@pytest.mark.parametrize("kind", ["mesh", ["image"]], ids=["unknown-name", "not-a-string"])
def test_an_unknown_kind_is_rejected_with_the_accepted_kinds(kind) -> None:
    with pytest.raises(
        ResourceError,
        match=re.escape(f"Unknown resource kind {kind!r}; accepted kinds: {ACCEPTED_KINDS}."),
    ):
        resource_from_dict({"kind": kind, "pixel_data": list_pixels([[1, 2]])})


def test_unknown_fields_are_rejected_by_name() -> None:
    data = {"kind": "image", "pixels": [[1]], "voxel_size": 1, "pixel_data": list_pixels([[1]])}

    with pytest.raises(
        ResourceError,
        match=re.escape(
            "Unknown resource field(s) ['pixels', 'voxel_size']; accepted fields: ['affine', "
            "'channel_names', 'filename', 'id', 'kind', 'metadata', 'mimetype', 'modality', "
            "'path', 'pixel_data', 'spacing']."
        ),
    ):
        resource_from_dict(data)


@pytest.mark.parametrize(
    "sources", [{}, {"pixel_data": list_pixels([[1]]), "path": "x.npy"}], ids=["neither", "both"]
)
def test_json_needs_exactly_one_of_pixel_data_or_path(sources: dict) -> None:
    with pytest.raises(
        ResourceError,
        match=re.escape(
            "Resource 'x' needs exactly one of 'pixel_data' (inline pixels) or 'path' "
            "(a local file: .npy, .npz, DICOM, NIfTI, PNG or JPEG)."
        ),
    ):
        resource_from_dict({"kind": "image", "id": "x", **sources})


def test_bad_base64_is_a_resource_error_naming_the_encoding() -> None:
    with pytest.raises(
        ResourceError, match=re.escape("Resource 'xr-1': pixel data is not valid base64.")
    ):
        resource_from_dict({"id": "xr-1", "pixel_data": {"encoding": "npy_base64", "data": "%%%"}})


def test_base64_of_bytes_that_are_not_npy_is_a_resource_error() -> None:
    text = base64.b64encode(b"definitely not an npy file").decode()

    with pytest.raises(
        ResourceError,
        match=re.escape(
            "Resource: Cannot read pixel data from the base64 pixel data: it is not a .npy file"
        ),
    ) as raised:
        resource_from_dict({"pixel_data": {"encoding": "npy_base64", "data": text}})
    # the client is never told to load with allow_pickle=True
    assert "allow_pickle" not in str(raised.value)


def test_npy_base64_never_unpickles_an_object_array() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([[{"evil": 1}]], dtype=object), allow_pickle=True)
    text = base64.b64encode(buffer.getvalue()).decode()

    with pytest.raises(
        ResourceError, match="it holds pickled Python objects, which are never loaded"
    ) as raised:
        resource_from_dict({"pixel_data": {"encoding": "npy_base64", "data": text}})
    # the client is never told to load with allow_pickle=True
    assert "allow_pickle" not in str(raised.value)


def test_a_ragged_list_is_a_resource_error_naming_the_encoding() -> None:
    with pytest.raises(ResourceError, match="unreadable list pixel data"):
        resource_from_dict({"kind": "image", "pixel_data": list_pixels([[1, 2], [3]])})


def test_an_unknown_pixel_encoding_names_the_accepted_ones() -> None:
    with pytest.raises(
        ResourceError,
        match=re.escape(
            "Resource 'xr-1': unknown pixel encoding 'png_base64'; "
            "accepted: ['npy_base64', 'list']."
        ),
    ):
        resource_from_dict({"id": "xr-1", "pixel_data": {"encoding": "png_base64", "data": "x"}})


@pytest.mark.parametrize("pixel_data", ["k05VTVBZ", {"encoding": "list"}, {"data": [[1]]}])
def test_pixel_data_must_be_an_object_with_encoding_and_data(pixel_data) -> None:
    with pytest.raises(
        ResourceError,
        match=re.escape(
            "'pixel_data' must be an object with 'encoding' "
            "(one of ['npy_base64', 'list']) and 'data'."
        ),
    ):
        resource_from_dict({"kind": "image", "pixel_data": pixel_data})


def test_a_resource_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(
        ResourceError, match=re.escape("A resource must be a JSON object (dict), got list.")
    ):
        resource_from_dict([[1, 2]])


def test_to_dict_rejects_an_unknown_pixel_encoding() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape("Unknown pixel_encoding 'png'; use 'npy_base64', 'list' or 'none'."),
    ):
        ImageResource(np.zeros((2, 2))).to_dict(pixel_encoding="png")


def test_resources_with_equal_values_but_different_dtypes_are_not_equal() -> None:
    pixels = np.arange(4).reshape(2, 2)

    assert ImageResource(pixels.astype(np.int16)) != ImageResource(pixels.astype(np.int32))
    assert ImageResource(pixels) == ImageResource(pixels.copy())


def test_an_image_and_a_video_frame_stack_with_the_same_pixels_are_not_equal() -> None:
    pixels = np.zeros((3, 4, 5))

    assert ImageResource(pixels) != VideoResource(pixels)


# -- as_resources: what predict accepts ----------------------------------------------------


def test_as_resources_wraps_a_single_resource_in_a_list() -> None:
    image = ImageResource(np.zeros((2, 2)))

    assert as_resources(image) == [image]
    assert as_resources(image)[0] is image


def test_as_resources_reads_a_single_resource_dict() -> None:
    image = ImageResource(np.eye(3), id="xr-1")

    assert as_resources(image.to_dict()) == [image]


def test_as_resources_reads_a_list_mixing_resources_and_dicts_in_order() -> None:
    first, second, third = sample_resources()[:3]

    assert as_resources([first, second.to_dict(), third]) == [first, second, third]


def test_as_resources_reads_a_resources_envelope() -> None:
    resources = sample_resources()

    assert as_resources({"resources": [r.to_dict() for r in resources]}) == resources


def test_as_resources_reads_a_dataframe_whose_records_were_padded_with_nan() -> None:
    resources = sample_resources()
    frame = pd.DataFrame([r.to_dict() for r in resources])
    assert frame["spacing"].isna().any()  # images and videos have no spacing column value

    assert as_resources(frame) == resources


def test_as_resources_reads_a_numpy_object_array_of_dicts() -> None:
    resources = sample_resources()[:3]
    records = np.empty(len(resources), dtype=object)
    records[:] = [r.to_dict() for r in resources]

    assert as_resources(records) == resources


def test_an_array_in_process_is_passed_as_the_array_itself_never_copied() -> None:
    volume = ct_volume()
    record = {"id": "ct-1", "kind": "volume", "spacing": [2.0, 1.0, 1.0], "pixel_data": volume}

    (received,) = as_resources([record])
    (from_a_frame,) = as_resources(pd.DataFrame([record]))

    assert received.pixels is volume
    assert from_a_frame.pixels is volume
    assert type(as_resources({"pixel_data": volume[0]})[0]) is ImageResource  # kind from ndim


def test_an_array_in_process_of_a_dtype_that_is_not_pixels_is_refused() -> None:
    with pytest.raises(ResourceError, match=r"Resource 'x': the pixel array has dtype <U1"):
        as_resources({"id": "x", "kind": "image", "pixel_data": np.array([["a"]])})


def test_the_list_encoding_takes_nested_lists_only_and_says_how_to_pass_an_array() -> None:
    with pytest.raises(
        ResourceError,
        match=re.escape(
            "list pixel data must be nested lists of numbers; got ndarray (in process, give a "
            "numpy array itself as 'pixel_data')."
        ),
    ):
        resource_from_dict({"kind": "image", "pixel_data": list_pixels(np.zeros((2, 2)))})


table_cells = st.one_of(
    st.none(),
    st.floats(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=12),
    st.sampled_from(["image", "volume", "video", "{}", '{"a": 1}', "[1]", "{oops"]),
    st.lists(st.floats(), max_size=4).map(np.array),
    st.lists(st.integers(-3, 3), min_size=1, max_size=4).map(
        lambda row: np.array([np.array(row)] * len(row), dtype=object)
    ),
    st.sampled_from([np.zeros((2, 3), np.uint8), np.zeros((2, 2, 2), np.float32), np.array("x")]),
    st.fixed_dictionaries(
        {"encoding": st.sampled_from(["list", "npy_base64", "png"]), "data": st.just([[1, 2]])}
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.dictionaries(st.sampled_from(sorted(RESOURCE_FIELDS - {"path"})), table_cells),
        min_size=1,
        max_size=3,
    )
)
def test_table_rows_of_any_cells_give_resources_or_a_resource_error(rows) -> None:
    # What a DataFrame, Arrow or Spark hands over: NaN and None cells, numpy arrays, JSON
    # text. Any of it builds resources or is refused saying what is accepted, never a crash.
    for model_input in (pd.DataFrame(rows), rows):
        try:
            resources = as_resources(model_input)
        except ResourceError as error:
            assert str(error).startswith("Input #"), error  # the entry is named
        else:
            assert len(resources) == len(rows)


def test_as_resources_rejects_a_bare_numeric_array_saying_how_to_wrap_it() -> None:
    with pytest.raises(
        ResourceError,
        match=re.escape(
            "Got a bare numeric array of shape (4, 4); wrap it so its kind is explicit: "
            "ImageResource(array), VolumeResource(array) or VideoResource(array)."
        ),
    ):
        as_resources(np.zeros((4, 4)))


def test_as_resources_rejects_a_number_listing_what_it_accepts() -> None:
    with pytest.raises(
        ResourceError,
        match=re.escape(
            "Cannot predict on input of type int; accepted: resource objects, resource dicts, "
            "a list of them, or a pandas DataFrame of resource records."
        ),
    ):
        as_resources(42)


def test_an_error_in_a_list_entry_names_its_position() -> None:
    good = ImageResource(np.zeros((2, 2))).to_dict()

    with pytest.raises(
        ResourceError, match=re.escape("Input #2: Unknown resource field(s) ['colour']")
    ):
        as_resources([good, good, {**good, "colour": "red"}])


def test_a_list_entry_that_is_not_an_object_names_its_position() -> None:
    with pytest.raises(
        ResourceError,
        match=re.escape("Input #1: A resource must be a JSON object (dict), got int."),
    ):
        as_resources([ImageResource(np.zeros((2, 2))), 7])


@pytest.mark.parametrize(
    ("malformed", "expected"),
    [
        (
            {"kind": "volume", "spacing": 2.5},
            "spacing=2.5 is not valid; expected three positive numbers (D, H, W) in mm.",
        ),
        ({"kind": "image", "metadata": "chest"}, "metadata must be a JSON object (dict), got str."),
        (
            {"kind": ["image"]},
            f"Unknown resource kind ['image']; accepted kinds: {ACCEPTED_KINDS}.",
        ),
    ],
    ids=["scalar-spacing", "metadata-not-an-object", "kind-not-a-string"],
)
def test_a_malformed_field_in_a_list_entry_is_a_resource_error_naming_its_position(
    malformed: dict, expected: str
) -> None:
    entry = {"pixel_data": list_pixels(np.zeros((2, 3, 4)).tolist()), **malformed}

    with pytest.raises(ResourceError, match="^" + re.escape(f"Input #1: {expected}") + "$"):
        as_resources([ImageResource(np.zeros((2, 2))), entry])


# -- a full-size CT volume -----------------------------------------------------------------


@pytest.fixture(scope="module")
def full_ct_volume() -> np.ndarray:
    """300 x 512 x 512 int16 (150 MiB), with values that differ along every axis."""
    return (
        np.arange(300, dtype=np.int16)[:, None, None] * 7
        + np.arange(512, dtype=np.int16)[:, None]
        - np.arange(512, dtype=np.int16)
    )


def test_every_axial_slice_of_a_300_slice_ct_volume_is_a_view_not_a_copy(
    full_ct_volume: np.ndarray,
) -> None:
    volume = VolumeResource(full_ct_volume)
    start = full_ct_volume.__array_interface__["data"][0]

    slices = [volume.get_slice(index) for index in range(300)]

    for index, image in enumerate(slices):
        assert image.pixels.__array_interface__["data"][0] == (
            start + index * full_ct_volume.strides[0]
        )
        assert image.pixels.base is full_ct_volume
    for index in (0, 149, 299):
        assert np.shares_memory(slices[index].pixels, full_ct_volume)
        np.testing.assert_array_equal(slices[index].pixels, full_ct_volume[index])


def test_a_300_slice_int16_ct_volume_round_trips_exactly_through_npy_base64(
    full_ct_volume: np.ndarray,
) -> None:
    received = decode_npy_base64(encode_npy_base64(full_ct_volume))

    assert received.dtype == np.int16
    assert received.shape == (300, 512, 512)
    assert np.array_equal(received, full_ct_volume)


def test_a_sagittal_view_round_trips_through_npy_base64() -> None:
    view = VolumeResource(ct_volume()).get_slice(2, "sagittal").pixels
    assert not view.flags.c_contiguous

    np.testing.assert_array_equal(decode_npy_base64(encode_npy_base64(view)), view)
