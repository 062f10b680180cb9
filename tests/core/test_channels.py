"""Channels in every resource, 4-D NIfTI, multi-modal cases (io.read_case) and their batch
manifest: a 4-channel 3-D model gets the same answer from every route."""

from __future__ import annotations

import csv
import json
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from datamint_core import (
    ImageResource,
    PredictionMode,
    ResourceError,
    SegmentationAnnotation,
    VideoResource,
    VolumeResource,
    load_model,
    save_model,
)
from datamint_core.io import AFFINE_TOLERANCE_MM, read, read_case, read_nifti
from datamint_core.io.geometry import dhw_to_nifti
from datamint_core.model import BaseDatamintModel
from datamint_core.wire import resource_from_dict
from tests.core.channel_models import (
    CASE_AFFINE,
    MODALITIES,
    FourChannelSegmenter,
    brain_case,
    write_case,
)
from tests.core.dicom_files import write_series

nibabel = pytest.importorskip("nibabel")


def channel_volume() -> VolumeResource:
    pixels = np.arange(3 * 4 * 5 * 2, dtype=np.float32).reshape(3, 4, 5, 2)
    return VolumeResource(
        pixels,
        id="case-1",
        spacing=(2.5, 0.9, 0.8),
        affine=CASE_AFFINE,
        channel_names=["t1", "flair"],
        metadata={"site": "A"},
    )


@pytest.mark.parametrize("encoding", ["npy_base64", "list"])
def test_a_multichannel_volume_round_trips_its_channel_names_through_json_exactly(encoding):
    volume = channel_volume()

    data = json.loads(json.dumps(volume.to_dict(pixel_encoding=encoding)))
    received = resource_from_dict(data)

    assert data["channel_names"] == ["t1", "flair"] and data["kind"] == "volume"
    assert received == volume
    assert received.channel_names == ("t1", "flair")
    assert received.num_channels == 2 and received.spatial_shape == (3, 4, 5)
    assert received.to_dict(pixel_encoding=encoding) == volume.to_dict(pixel_encoding=encoding)
    assert resource_from_dict({**data, "channel_names": ["t1", "t2"]}) != volume


@pytest.mark.parametrize(("axis", "index"), [("axial", 1), ("coronal", 2), ("sagittal", 4)])
def test_a_slice_of_a_multichannel_volume_is_a_multichannel_image_that_is_a_view(axis, index):
    volume = channel_volume()

    image = volume.get_slice(index, axis)

    assert isinstance(image, ImageResource)
    assert image.pixels.ndim == 3 and image.pixels.shape[-1] == 2
    assert image.channel_names == ("t1", "flair")
    assert np.shares_memory(image.pixels, volume.pixels)
    selector = {"axial": np.s_[index], "coronal": np.s_[:, index], "sagittal": np.s_[:, :, index]}
    np.testing.assert_array_equal(image.pixels, volume.pixels[selector[axis]])
    assert len(image.spacing) == 2  # geometry stays spatial


def test_a_frame_of_a_multichannel_video_keeps_its_channel_names_and_is_a_view():
    video = VideoResource(np.zeros((3, 4, 5, 2), np.uint8), channel_names=["left", "right"])

    frame = video.get_frame(2)

    assert frame.channel_names == ("left", "right") and frame.shape == (4, 5, 2)
    assert np.shares_memory(frame.pixels, video.pixels)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: VolumeResource(np.zeros((3, 4, 5)), channel_names=["t1"]),
            "VolumeResource has 1 channel_names ['t1'] but pixel data of shape (3, 4, 5), which "
            "has no channel axis; expected (D, H, W) or (D, H, W, C) with D the axial axis "
            "with C = 1.",
        ),
        (
            lambda: VolumeResource(np.zeros((3, 4, 5, 2)), channel_names=["t1", "t2", "flair"]),
            "VolumeResource has 3 channel_names ['t1', 't2', 'flair'] but 2 channels (pixel data "
            "of shape (3, 4, 5, 2)); give one name per channel of the last axis.",
        ),
        (
            lambda: ImageResource(np.zeros((4, 5, 2)), channel_names="t1"),
            "ImageResource: channel_names='t1' is not valid; expected a list of names, one per "
            'channel, e.g. ["t1", "t1c", "t2", "flair"].',
        ),
        (
            lambda: ImageResource(np.zeros((4, 5, 2)), channel_names=["t1", "t1"]),
            "ImageResource: channel_names=['t1', 't1'] is not valid (it repeats a name); expected "
            "distinct non-empty strings of at most 64 characters, one per channel.",
        ),
        (
            lambda: ImageResource(np.zeros((4, 5, 2)), channel_names=["t1", 3]),
            "ImageResource: channel_names=['t1', 3] is not valid (3 is not a name)",
        ),
    ],
    ids=["no-channel-axis", "wrong-count", "a-string", "repeated", "not-a-string"],
)
def test_channel_names_that_do_not_fit_the_pixels_are_refused_saying_what_fits(build, message):
    with pytest.raises(ResourceError, match=re.escape(message)):
        build()


def test_a_multichannel_volume_needs_kind_volume_in_json_since_4d_pixels_alone_are_a_video():
    data = channel_volume().to_dict()
    del data["kind"], data["affine"], data["spacing"]

    assert isinstance(resource_from_dict(data), VideoResource)
    assert isinstance(resource_from_dict({**data, "kind": "volume"}), VolumeResource)


class SliceChannelMean(BaseDatamintModel):
    """A 2-D model: ``predict_slice``-free, ``predict_image`` on (H, W, C) slices."""

    def predict_image(self, model_input, **kwargs):
        results = []
        for image in model_input:
            assert image.pixels.ndim == 3 and image.channel_names == ("t1", "flair")
            results.append([SegmentationAnnotation("high", image.pixels.mean(axis=-1) > 50)])
        return results


def test_the_volume_bridge_runs_multichannel_slices_and_returns_a_spatial_volume_mask():
    volume = channel_volume()
    volume.pixels[...] = np.arange(volume.pixels.size).reshape(volume.pixels.shape) % 97

    (annotations,) = SliceChannelMean().predict([volume], {"mode": PredictionMode.VOLUME.value})

    (mask,) = annotations
    assert mask.mask.shape == (3, 4, 5)  # no channel axis
    np.testing.assert_array_equal(mask.mask, volume.pixels.mean(axis=-1) > 50)
    np.testing.assert_array_equal(mask.affine, CASE_AFFINE)


def test_a_4d_nifti_without_a_time_unit_reads_as_channels_each_contiguous_in_memory(tmp_path):
    case = brain_case()
    paths = write_case(tmp_path, case)

    volume = read(paths["four_d"])

    assert isinstance(volume, VolumeResource) and volume.pixels.shape == case.shape
    np.testing.assert_array_equal(volume.pixels, case)
    np.testing.assert_allclose(volume.affine, CASE_AFFINE)
    assert volume.metadata["fourth_axis"] == "channels" and volume.num_channels == 4
    assert volume.pixels.transpose(3, 0, 1, 2).flags.c_contiguous  # (C, D, H, W) for free


def _timed_nifti(path: Path, data: np.ndarray, unit: str, step: float) -> str:
    image = nibabel.Nifti1Image(data, dhw_to_nifti(CASE_AFFINE))
    image.header.set_xyzt_units("mm", unit)
    image.header["pixdim"][4] = step
    nibabel.save(image, path)
    return str(path)


def test_a_4d_nifti_with_a_time_unit_reads_as_time_unless_told_channels(tmp_path):
    data = brain_case()[..., :3].transpose(2, 1, 0, 3)
    path = _timed_nifti(tmp_path / "dce.nii.gz", data, "msec", 1500.0)

    timed = read(path)
    as_channels = read_nifti(path, fourth_axis="channels")

    assert timed.metadata["fourth_axis"] == "time" and timed.metadata["time_step_s"] == 1.5
    assert as_channels.metadata["fourth_axis"] == "channels"
    np.testing.assert_array_equal(timed.pixels, as_channels.pixels)


def test_a_single_slice_over_time_reads_as_a_video_of_its_frames(tmp_path):
    frames = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)  # (T, H, W)
    path = _timed_nifti(
        tmp_path / "cine.nii", frames.transpose(2, 1, 0)[:, :, None, :], "sec", 0.04
    )

    video = read(path)

    assert isinstance(video, VideoResource) and video.metadata["time_step_s"] == 0.04
    np.testing.assert_array_equal(video.pixels, frames)


def test_a_long_fourth_axis_without_a_time_unit_must_be_named(tmp_path):
    path = tmp_path / "long.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 2, 20), np.int16), np.eye(4)), path)

    with pytest.raises(ResourceError, match=re.escape("say how to read it: fourth_axis=")):
        read(path)
    assert read(path, fourth_axis="time").pixels.shape == (2, 4, 4, 20)
    with pytest.raises(ResourceError, match=re.escape("accepted: ['auto', 'channels', 'time']")):
        read(path, fourth_axis="volumes")


def test_read_case_stacks_nifti_files_in_the_given_order_equal_to_the_4d_file(tmp_path):
    case = brain_case()
    paths = write_case(tmp_path, case)

    stacked = read_case(paths["channels"])
    reordered = read_case({name: paths["channels"][name] for name in reversed(MODALITIES)})

    assert stacked.channel_names == MODALITIES
    np.testing.assert_array_equal(stacked.pixels, read(paths["four_d"]).pixels)
    np.testing.assert_allclose(stacked.affine, CASE_AFFINE)
    assert stacked.pixels.transpose(3, 0, 1, 2).flags.c_contiguous
    assert stacked.metadata["channels"]["t2"]["filename"] == "t2.nii.gz"
    np.testing.assert_array_equal(reordered.pixels, case[..., ::-1])
    assert reordered.channel_names == tuple(reversed(MODALITIES))


def test_read_case_mixes_a_dicom_series_with_nifti_on_the_same_grid(tmp_path):
    series = write_series(tmp_path / "ct", 6, size=16)
    ct = read(tmp_path / "ct")
    other = np.asarray(ct.pixels * 2 + 1, dtype=np.int32)
    nifti = tmp_path / "pet.nii.gz"
    nibabel.save(nibabel.Nifti1Image(other.transpose(2, 1, 0), dhw_to_nifti(ct.affine)), nifti)

    case = read_case({"ct": tmp_path / "ct", "pet": nifti})

    assert case.pixels.shape == (6, 16, 16, 2) and case.pixels.dtype == np.int32
    np.testing.assert_array_equal(case.pixels[..., 0], ct.pixels)
    np.testing.assert_array_equal(case.pixels[..., 1], other)
    assert series.shape == (6, 16, 16)
    assert case.metadata["channels"]["ct"]["modality"] == "CT"


def test_read_case_names_the_channel_whose_affine_differs_beyond_the_tolerance(tmp_path):
    case = brain_case()
    paths = write_case(tmp_path, case)
    shifted = CASE_AFFINE.copy()
    shifted[0, 3] += 0.01  # 10 micrometres: more than the 1e-3 mm tolerance
    moved = tmp_path / "moved.nii.gz"
    nibabel.save(nibabel.Nifti1Image(case[..., 2].transpose(2, 1, 0), dhw_to_nifti(shifted)), moved)
    channels = {**paths["channels"], "t2": str(moved)}

    with pytest.raises(ResourceError) as caught:
        read_case(channels)

    assert str(caught.value).startswith(
        "Channel 't2' (moved.nii.gz) is not on the grid of channel 't1': their affines differ "
        f"by up to 0.01 mm (tolerance {AFFINE_TOLERANCE_MM:g} mm)."
    )
    assert read_case(channels, affine_tolerance_mm=0.02).channel_names == MODALITIES


def test_read_case_names_the_channel_whose_shape_differs_and_refuses_a_multichannel_source(
    tmp_path,
):
    paths = write_case(tmp_path, brain_case())
    small = tmp_path / "small.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4)), small)

    with pytest.raises(
        ResourceError,
        match=re.escape(
            "Channel 'flair' (small.nii.gz) is a volume of shape (8, 8, 8), but channel 't1' is a "
            "volume of shape (10, 24, 24); the channels of a case must be co-registered on one grid"
        ),
    ):
        read_case({**paths["channels"], "flair": small})
    with pytest.raises(
        ResourceError,
        match=re.escape(
            "Channel 'all' (case-4d.nii.gz) holds a volume of shape (10, 24, 24, 4); each channel "
            "of a case is one grayscale volume (D, H, W) or image (H, W)."
        ),
    ):
        read_case({"all": paths["four_d"]})
    with pytest.raises(ResourceError, match="needs at least one channel"):
        read_case({})


def _peak_bytes(function):
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_read_case_holds_the_case_plus_one_channel_being_read_at_most(tmp_path):
    case = np.random.default_rng(1).integers(0, 1000, (32, 64, 64, 4)).astype(np.float32)
    paths = write_case(tmp_path, case)
    _, one_read = _peak_bytes(lambda: read(paths["channels"]["t1"]))

    stacked, peak = _peak_bytes(lambda: read_case(paths["channels"]))

    assert stacked.pixels.nbytes == case.nbytes
    # The stacked case, plus what reading one channel's file takes (decompression included).
    assert peak <= case.nbytes + 1.1 * one_read, (peak, one_read)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("channels") / "four-channel"
    save_model(FourChannelSegmenter(), path)
    return path


def test_the_four_channel_model_refuses_a_case_missing_a_channel(model_path, tmp_path):
    paths = write_case(tmp_path, brain_case())
    three = {name: paths["channels"][name] for name in MODALITIES[:3]}

    with pytest.raises(ValueError, match=re.escape("this model takes (D, H, W, 4) volumes")):
        load_model(str(model_path)).predict([read_case(three)], {"mode": "volume"})


def test_a_manifest_with_one_path_column_per_channel_batches_each_case_as_in_process(
    model_path, tmp_path
):
    from datamint_core.batch import read_annotations, read_results, run_batch

    manifest = tmp_path / "cases.csv"
    rows = []
    for index in range(3):
        paths = write_case(tmp_path / f"case-{index}", brain_case(seed=index))
        relative = {
            n: Path(p).relative_to(tmp_path).as_posix() for n, p in paths["channels"].items()
        }
        rows.append({"id": f"case-{index}", **{f"path:{n}": relative[n] for n in MODALITIES}})
    with open(manifest, "w", newline="") as file:
        writer = csv.DictWriter(file, ["id", *(f"path:{n}" for n in MODALITIES)])
        writer.writeheader()
        writer.writerows(rows)
    model = load_model(str(model_path))

    report = run_batch(str(model_path), manifest, tmp_path / "out", {"mode": "volume"}, workers=2)

    assert report.ok and report.succeeded == 3
    results = read_results(tmp_path / "out").set_index("id")
    for row in rows:
        case = read_case({n: tmp_path / row[f"path:{n}"] for n in MODALITIES})
        (expected,) = model.predict([case], {"mode": "volume"})
        found = read_annotations(results.loc[row["id"], "annotations"], tmp_path / "out")
        assert found == expected, row["id"]
        assert results.loc[row["id"], "path"] == str(tmp_path / row["path:t1"])


def test_a_manifest_mixing_path_and_channel_columns_or_missing_a_channel_is_refused(tmp_path):
    from datamint_core import BatchInputError
    from datamint_core.batch._inputs import iter_inputs

    both = tmp_path / "both.jsonl"
    both.write_text(json.dumps({"path": "a.nii", "path:t1": "a.nii"}) + "\n")
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"id": "x", "path:t1": "a.nii", "path:t2": ""}) + "\n")

    with pytest.raises(BatchInputError, match="has both a 'path' column and per-channel"):
        list(iter_inputs(both))
    with pytest.raises(
        BatchInputError, match=re.escape("Row 'x' has no path for channel(s) ['t2']")
    ):
        list(iter_inputs(missing))


def test_masks_of_a_multichannel_case_are_written_as_a_spatial_nifti_label_map(
    model_path, tmp_path
):
    from datamint_core.io.writers import write_nifti

    paths = write_case(tmp_path, brain_case())
    case = read_case(paths["channels"])
    (annotations,) = load_model(str(model_path)).predict([case], {"mode": "volume"})

    written = read(write_nifti(annotations, tmp_path / "mask.nii.gz", source=case))

    assert written.pixels.shape == case.spatial_shape
    np.testing.assert_allclose(written.affine, CASE_AFFINE)
    np.testing.assert_array_equal(written.pixels > 0, annotations[0].mask)


def test_masks_are_run_length_encoded_without_a_second_mask_sized_array():
    from datamint_core.annotations import decode_mask_rle, encode_mask_rle

    mask = np.zeros((64, 512, 512), dtype=bool)
    mask[10:50, 100:300, 200:400] = True
    mask[30, 0, :7] = True

    encoded, peak = _peak_bytes(lambda: encode_mask_rle(mask))

    assert peak < 0.5 * mask.nbytes, peak  # np.diff of the whole mask alone is 1x
    np.testing.assert_array_equal(decode_mask_rle(encoded), mask)


@pytest.mark.parametrize("labels", [2, 12])
def test_a_nifti_label_map_is_written_without_a_per_label_copy_of_the_volume(tmp_path, labels):
    from datamint_core.io.writers import write_nifti

    depth, size = 40, 256
    z, y, x = np.ogrid[:depth, :size, :size]
    masks = [
        SegmentationAnnotation(
            f"organ-{index}",
            (z > index) & ((y - 8 * index - 30) ** 2 + (x - 128) ** 2 < 400),
            scope="volume",
        )
        for index in range(labels)
    ]
    source = VolumeResource(np.zeros((depth, size, size), np.int16), affine=CASE_AFFINE)
    write_nifti(masks[:1], tmp_path / "warm.nii.gz", source=source)  # imports nibabel

    _, peak = _peak_bytes(lambda: write_nifti(masks, tmp_path / "mask.nii.gz", source=source))

    voxels = depth * size * size
    assert peak < 1.3 * voxels, peak / voxels  # the uint8 label map, and little else
    written = read(tmp_path / "mask.nii.gz").pixels
    assert written.max() == labels


def test_a_request_naming_thousands_of_channel_parts_gets_a_413_before_the_stack_is_allocated():
    import io

    from datamint_core._limits import RequestLimits, applying
    from datamint_core.serving.payload import RequestError, _with_part_arrays

    def npy(array: np.ndarray) -> io.BytesIO:
        stream = io.BytesIO()
        np.save(stream, array)
        stream.seek(0)
        return stream

    # A 64 MiB first channel, then 4095 one-voxel parts: stacked, 256 GiB.
    parts = {"c0": npy(np.zeros((256, 512, 512), np.uint8))}
    parts.update({f"c{i}": npy(np.zeros((1, 1, 1), np.uint8)) for i in range(1, 4096)})
    records = [{"id": "case", "pixel_data": {"encoding": "multipart", "parts": list(parts)}}]

    with applying(RequestLimits()), pytest.raises(RequestError) as refused:
        _with_part_arrays(records, parts)

    assert refused.value.status_code == 413
    assert "the stacked channels would decode to 274877906944 bytes" in str(refused.value)
