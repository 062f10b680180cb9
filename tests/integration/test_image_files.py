"""``datamint predict`` on real medical files: NIfTI, DICOM series and PNG in, a NIfTI
label map, a DICOM SEG, JSON and an overlay picture out."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from datamint_core import load_model, save_model
from datamint_core.cli import main
from datamint_core.io import read
from datamint_core.io.writers import PALETTE
from tests.core.dicom_files import nibabel_file, pydicom_file, write_series
from tests.core.sample_models import ThresholdSegmenter

nibabel = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")
highdicom = pytest.importorskip("highdicom")
Image = pytest.importorskip("PIL.Image")

# anatomical.nii holds int16 intensities up to a few hundred; this keeps a few thousand voxels.
THRESHOLD = 60.0


@pytest.fixture(autouse=True)
def _quiet_readers():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="pydicom|highdicom")
        yield


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "segmenter"
    save_model(ThresholdSegmenter(threshold=THRESHOLD), path)
    return path


def test_a_volume_predicted_in_volume_mode_writes_a_nifti_mask_aligned_voxel_for_voxel(
    model_path: Path, tmp_path: Path, capsys
):
    source = tmp_path / "anatomical.nii.gz"
    nibabel.save(nibabel.load(nibabel_file("anatomical.nii")), source)
    mask_path, overlay = tmp_path / "out" / "mask.nii.gz", tmp_path / "slice.png"
    code = main(
        [
            "predict",
            "-m",
            str(model_path),
            "-i",
            str(source),
            "-o",
            str(mask_path),
            "--mode",
            "volume",
            "--overlay",
            str(overlay),
        ]
    )
    assert code == 0, capsys.readouterr().err
    original, written = nibabel.load(source), nibabel.load(mask_path)
    assert written.shape == original.shape
    np.testing.assert_allclose(written.affine, original.affine)
    # Voxel (i, j, k) of the mask is voxel (i, j, k) of the source, thresholded.
    expected = np.asarray(original.dataobj) > THRESHOLD
    np.testing.assert_array_equal(np.asarray(written.dataobj) == 1, expected)
    assert expected.sum() > 1000
    legend = json.loads(written.header.extensions[0].get_content())
    assert legend == {"labels": {"1": "bright"}}
    picture = np.asarray(Image.open(overlay).convert("RGB"))
    assert (picture == PALETTE[0]).all(axis=2).sum() > 50  # the mask's outline is drawn


def test_a_dicom_series_predicted_in_volume_mode_writes_a_seg_referencing_the_series(
    model_path: Path, tmp_path: Path, capsys
):
    write_series(tmp_path / "ct", 8, size=32, seed=2)
    seg_path = tmp_path / "seg.dcm"
    code = main(
        [
            "predict",
            "-m",
            str(model_path),
            "-i",
            str(tmp_path / "ct"),
            "-o",
            str(seg_path),
            "--mode",
            "volume",
        ]
    )
    assert code == 0, capsys.readouterr().err
    volume = read(tmp_path / "ct")
    segmentation = highdicom.seg.segread(seg_path)
    assert segmentation.Modality == "SEG"
    referenced = segmentation.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == volume.metadata["SeriesInstanceUID"]
    assert (
        segmentation.FrameOfReferenceUID
        == pydicom.dcmread(next((tmp_path / "ct").iterdir())).FrameOfReferenceUID
    )
    assert [s.SegmentLabel for s in segmentation.SegmentSequence] == ["bright"]
    # The SEG's frames, looked up by the source images they segment, are the mask.
    uids = volume.metadata["SOPInstanceUIDs"]
    pixels = segmentation.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1]
    )
    np.testing.assert_array_equal(pixels[..., 0] == 1, volume.pixels > THRESHOLD)


def test_a_png_prediction_is_written_as_the_same_json_as_an_in_process_predict(
    model_path: Path, tmp_path: Path, capsys
):
    picture = (np.random.default_rng(1).random((24, 30)) * 120).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "xray.png")
    assert (
        main(
            [
                "predict",
                "-m",
                str(model_path),
                "-i",
                str(tmp_path / "xray.png"),
                "-o",
                str(tmp_path / "out.json"),
            ]
        )
        == 0
    ), capsys.readouterr().err
    expected = load_model(str(model_path)).predict([read(tmp_path / "xray.png")], {})
    written = json.loads((tmp_path / "out.json").read_text())
    assert written == {"predictions": [[a.to_dict() for a in expected[0]]]}


def _oblique_ct_image(path: Path, orientation: list[float] | None = None) -> Path:
    """pydicom's CT_small.dcm turned 30 degrees about the patient's z axis, moved away."""
    dataset = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    angle = np.radians(30)
    dataset.ImageOrientationPatient = orientation or [
        round(v, 6) for v in (np.cos(angle), np.sin(angle), 0, -np.sin(angle), np.cos(angle), 0)
    ]
    dataset.ImagePositionPatient = [12.5, -40.25, 77.0]
    dataset.PixelSpacing = [0.75, 0.5]
    dataset.save_as(path)
    return path


def test_a_single_dicom_image_written_as_nifti_lies_where_simpleitk_places_the_image(
    model_path: Path, tmp_path: Path, capsys
):
    sitk = pytest.importorskip("SimpleITK")
    source = _oblique_ct_image(tmp_path / "ct.dcm")
    mask_path = tmp_path / "mask.nii.gz"
    code = main(["predict", "-m", str(model_path), "-i", str(source), "-o", str(mask_path)])
    assert code == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().err
    written, reference = sitk.ReadImage(str(mask_path)), sitk.ReadImage(str(source))
    assert written.GetSize() == reference.GetSize() == (128, 128, 1)
    np.testing.assert_allclose(written.GetOrigin(), reference.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(written.GetSpacing(), reference.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(written.GetDirection(), reference.GetDirection(), atol=1e-5)
    expected = sitk.GetArrayFromImage(reference) > THRESHOLD
    assert 0 < expected.sum() < expected.size
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written) == 1, expected)


def test_a_single_dicom_image_with_a_skewed_orientation_is_refused_by_predict(
    model_path: Path, tmp_path: Path, capsys
):
    source = _oblique_ct_image(tmp_path / "skewed.dcm", [1, 0, 0, 0.5, 0.5, 0])
    mask_path = tmp_path / "mask.nii.gz"
    code = main(["predict", "-m", str(model_path), "-i", str(source), "-o", str(mask_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert "ImageOrientationPatient of 'skewed.dcm' is [1.0, 0.0, 0.0, 0.5, 0.5, 0.0]" in err
    assert "accepted: six finite numbers" in err
    assert not mask_path.exists()


def test_a_seg_output_needs_a_dicom_input_and_says_so(model_path: Path, tmp_path: Path, capsys):
    shutil.copy(nibabel_file("standard.nii.gz"), tmp_path / "in.nii.gz")
    code = main(
        [
            "predict",
            "-m",
            str(model_path),
            "-i",
            str(tmp_path / "in.nii.gz"),
            "-o",
            str(tmp_path / "seg.dcm"),
            "--mode",
            "volume",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "A DICOM SEG references its source series, so it needs a DICOM input" in err
    assert "is nifti" in err
    assert not (tmp_path / "seg.dcm").exists()


def test_a_mask_output_for_a_json_request_is_refused(model_path: Path, tmp_path: Path, capsys):
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"resources": []}))
    code = main(
        ["predict", "-m", str(model_path), "-i", str(request), "-o", str(tmp_path / "mask.nii.gz")]
    )
    assert code == 1
    assert "a JSON request's result is written as JSON" in capsys.readouterr().err
