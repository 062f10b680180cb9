"""ImageDataset on local projects: the Decathlon and nnU-Net layouts, NIfTI and DICOM + SEG."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamint_core import ProjectDataError, ProjectNotFoundError
from datamint_core.training import ImageDataset
from tests.training_projects import (
    LABELS,
    SPACING,
    phantom_case,
    write_msd_project,
    write_nifti,
    write_nnunet_project,
)


@pytest.fixture
def projects(tmp_path: Path) -> Path:
    root = tmp_path / "projects"
    write_msd_project(root / "Task03_Liver", cases=4, name="Liver Segmentation")
    return root


def test_a_decathlon_project_is_found_by_name_under_the_projects_dir_from_the_environment(
    projects, monkeypatch
):
    monkeypatch.setenv("DATAMINT_PROJECTS_DIR", str(projects))
    dataset = ImageDataset(project="Liver Segmentation")

    assert dataset.project_name == "Liver Segmentation"
    assert dataset.source == "local" and dataset.layout == "msd"
    assert dataset.label_names == LABELS
    assert dataset.channel_names == ("CT",)
    assert dataset.case_ids == ("liver_0", "liver_1", "liver_2", "liver_3")
    case = dataset[2]
    image, label = phantom_case(2)
    assert case.case_id == "liver_2"
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.label, label)
    assert case.spacing == pytest.approx(SPACING)
    assert case.affine.shape == (4, 4)
    assert case.metadata["label_path"].endswith("labelsTr/liver_2.nii.gz")


def test_the_projects_dir_can_come_from_the_config_file_and_a_directory_name_works_too(
    projects, tmp_path, monkeypatch
):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"projects_dir": str(projects)}))
    monkeypatch.setenv("DATAMINT_CONFIG_FILE", str(config))
    assert ImageDataset(project="Task03_Liver").case_ids[0] == "liver_0"
    # An explicit projects_dir beats the file.
    with pytest.raises(ProjectNotFoundError, match="local projects under"):
        ImageDataset(project="Task03_Liver", projects_dir=tmp_path / "elsewhere")


def test_a_project_given_by_path_is_named_by_its_dataset_json(projects):
    dataset = ImageDataset(projects / "Task03_Liver")
    assert dataset.project_name == "Liver Segmentation"
    assert len(dataset) == 4
    assert [case.case_id for case in dataset[1:3]] == ["liver_1", "liver_2"]


def test_the_test_subset_reads_the_unlabelled_images(projects):
    test = ImageDataset(projects / "Task03_Liver", subset="test")
    assert test.case_ids == ("liver_4",)
    case = test[0]
    assert case.label is None
    np.testing.assert_array_equal(case.image, phantom_case(4)[0])


def test_an_nnunet_project_stacks_its_channel_files_last(tmp_path):
    root = write_nnunet_project(tmp_path / "Dataset002_Prostate", cases=3, channels=2)
    dataset = ImageDataset(root)
    assert dataset.layout == "nnunet"
    assert dataset.channel_names == ("T2", "ADC")
    case = dataset.load("case_001")
    image, label = phantom_case(1, (6, 24, 24), channels=2)
    assert case.image.shape == (6, 24, 24, 2)
    np.testing.assert_allclose(case.image, image)
    np.testing.assert_array_equal(case.label, label)


def test_a_multi_channel_case_becomes_a_volume_resource_that_keeps_its_channel_names(tmp_path):
    from datamint_core.wire import resource_from_dict

    root = write_nnunet_project(tmp_path / "Dataset002_Prostate", cases=1, channels=2)
    case = ImageDataset(root).load("case_000")
    volume = case.to_resource()
    assert volume.channel_names == ("T2", "ADC")
    assert volume.spatial_shape == case.image.shape[:3]
    assert resource_from_dict(volume.to_dict()).channel_names == ("T2", "ADC")
    one = write_nnunet_project(tmp_path / "Dataset003_Liver", cases=1, channels=1)
    single = ImageDataset(one).load("case_000").to_resource()
    assert single.channel_names is None and single.num_channels == 1


def test_a_decathlon_four_dimensional_image_holds_its_channels(tmp_path):
    root = write_msd_project(tmp_path / "brain", cases=2, shape=(4, 16, 16))
    description = json.loads((root / "dataset.json").read_text())
    description["modality"] = {"0": "FLAIR", "1": "T1w"}
    (root / "dataset.json").write_text(json.dumps(description))
    image, _ = phantom_case(0, (4, 16, 16), channels=2)
    write_nifti(root / "imagesTr" / "liver_0.nii.gz", image)
    case = ImageDataset(root)[0]
    assert case.image.shape == (4, 16, 16, 2)
    np.testing.assert_allclose(case.image, image)


def test_nnunet_label_values_that_are_not_one_two_three_are_renumbered(tmp_path):
    root = write_nnunet_project(tmp_path / "p", cases=2, channels=1)
    description = json.loads((root / "dataset.json").read_text())
    description["labels"] = {"background": 0, "liver": 1, "tumour": 2, "vessel": 7}
    (root / "dataset.json").write_text(json.dumps(description))
    _, label = phantom_case(0, (6, 24, 24))
    label[0, 0, 0] = 7
    write_nifti(root / "labelsTr" / "case_000.nii.gz", label)
    case = ImageDataset(root)[0]
    assert ImageDataset(root).label_names == ("liver", "tumour", "vessel")
    assert case.label[0, 0, 0] == 3
    assert set(np.unique(case.label)) == {0, 1, 2, 3}


def test_a_dicom_series_with_a_dicom_seg_label_reads_on_the_series_grid(tmp_path):
    from datamint_core import SegmentationAnnotation
    from datamint_core.io import read
    from datamint_core.io.writers import write_dicom_seg
    from tests.core.dicom_files import write_series

    root = tmp_path / "ct"
    series = root / "imagesTr" / "ct_0"
    volume = write_series(series, slices=5, size=32)
    (root / "labelsTr").mkdir(parents=True)
    read_volume = read(series)
    liver = np.zeros(volume.shape, dtype=bool)
    liver[1:4, 8:20, 8:20] = True
    tumour = np.zeros(volume.shape, dtype=bool)
    tumour[2, 10:12, 10:12] = True
    write_dicom_seg(
        [SegmentationAnnotation("liver", liver & ~tumour, scope="volume"),
         SegmentationAnnotation("tumour", tumour, scope="volume")],
        root / "labelsTr" / "ct_0.dcm", source=series,
    )
    (root / "dataset.json").write_text(json.dumps({
        "name": "CT", "labels": {"0": "background", "1": "liver", "2": "tumour"},
        "training": [{"image": "./imagesTr/ct_0", "label": "./labelsTr/ct_0.dcm"}],
    }))
    case = ImageDataset(root)[0]
    np.testing.assert_array_equal(case.image, read_volume.pixels)
    np.testing.assert_allclose(case.affine, read_volume.affine)
    expected = np.where(tumour, 2, np.where(liver, 1, 0))
    np.testing.assert_array_equal(case.label, expected)


def test_nothing_but_the_description_is_read_until_a_case_is_asked_for(projects):
    broken = projects / "Task03_Liver" / "imagesTr" / "liver_3.nii.gz"
    broken.write_bytes(b"not a nifti file at all")
    dataset = ImageDataset(projects / "Task03_Liver")  # reads dataset.json only
    assert len(dataset) == 4
    with pytest.raises(ProjectDataError, match=r"Case 'liver_3'.*liver_3\.nii\.gz"):
        dataset.load("liver_3")
    with pytest.raises(KeyError, match="No case 'liver_9'"):
        dataset.load("liver_9")


def test_a_missing_project_says_where_it_looked(tmp_path, projects):
    with pytest.raises(ProjectNotFoundError) as raised:
        ImageDataset(project="Lung", projects_dir=projects)
    message = str(raised.value)
    assert "'Task03_Liver'" in message and "DATAMINT_API_KEY" in message
    with pytest.raises(ProjectNotFoundError, match="no local projects root is set"):
        ImageDataset(project="Lung")
    with pytest.raises(ProjectDataError, match="has no dataset.json"):
        ImageDataset(tmp_path)


def test_a_label_on_another_grid_or_with_undeclared_values_is_refused_naming_the_case(projects):
    root = projects / "Task03_Liver"
    _, label = phantom_case(0)
    write_nifti(root / "labelsTr" / "liver_0.nii.gz", label[:, :16])
    label[0, 0, 0] = 5
    write_nifti(root / "labelsTr" / "liver_1.nii.gz", label)
    write_nifti(root / "labelsTr" / "liver_2.nii.gz", phantom_case(2)[1], spacing=(3.0, 1.0, 1.0))
    dataset = ImageDataset(root)
    with pytest.raises(ProjectDataError, match=r"'liver_0'.*shape \(8, 16, 32\).*\(8, 32, 32\)"):
        dataset.load("liver_0")
    with pytest.raises(ProjectDataError, match=r"'liver_1'.*value\(s\) \[5\]"):
        dataset.load("liver_1")
    with pytest.raises(ProjectDataError, match=r"'liver_2'.*another affine"):
        dataset.load("liver_2")


def test_channels_on_different_grids_are_refused(tmp_path):
    root = write_nnunet_project(tmp_path / "p", cases=2, channels=2)
    image, _ = phantom_case(0, (6, 24, 24))
    write_nifti(root / "imagesTr" / "case_000_0001.nii.gz", image, spacing=(5.0, 0.8, 0.8))
    with pytest.raises(ProjectDataError, match=r"channel 1 \(ADC\) lies on another grid"):
        ImageDataset(root)[0]


def test_a_training_entry_naming_a_missing_file_is_refused_when_the_project_is_opened(projects):
    root = projects / "Task03_Liver"
    shutil.move(root / "labelsTr" / "liver_1.nii.gz", root / "liver_1.nii.gz")
    with pytest.raises(ProjectDataError, match=r"training\[1\].*labelsTr/liver_1\.nii\.gz"):
        ImageDataset(root)


def test_bad_arguments_name_what_is_accepted(projects):
    with pytest.raises(ValueError, match="source='cloud'"):
        ImageDataset(projects / "Task03_Liver", source="cloud")
    with pytest.raises(ValueError, match="subset='validation'"):
        ImageDataset(projects / "Task03_Liver", subset="validation")
    with pytest.raises(ValueError, match="is not a project"):
        ImageDataset("  ")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=_JSON, channels=_JSON)
def test_any_dataset_json_labels_and_channels_open_or_are_refused_with_a_project_error(
    tmp_path, labels, channels
):
    from datamint_core.training._layout import read_layout

    root = tmp_path / "generated"
    if not (root / "dataset.json").exists():
        write_msd_project(root, cases=1, shape=(2, 8, 8), test_cases=0)
    description = json.loads((root / "dataset.json").read_text())
    description.update(labels=labels, modality=channels)
    (root / "dataset.json").write_text(json.dumps(description))
    try:
        layout = read_layout(root)
    except ProjectDataError:
        return
    assert layout.label_names and all(v > 0 for v in layout.label_values)
    assert len(layout.channel_names) >= 1
