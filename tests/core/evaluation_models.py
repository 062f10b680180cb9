"""A segmentation model and a generated project for the evaluation tests (importable by
spawned workers).

The model reads its input as a label map: ``organ`` where the voxel rounds to 1, ``lesion``
where it rounds to 2. The project's images are their label maps moved or altered, so what
the model predicts (and so every metric) is known: ``expected_prediction(image)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from datamint_core import (
    AnnotationSpec,
    AnnotationType,
    BaseDatamintModel,
    SegmentationAnnotation,
    TaskType,
)

LABELS = {1: "organ", 2: "lesion"}


class LabelMapSegmenter(BaseDatamintModel):
    """Segments a volume whose voxel values are label values (see the module)."""

    task_type = TaskType.IMAGE_SEGMENTATION
    annotation_specs = [
        AnnotationSpec("organ", AnnotationType.SEGMENTATION),
        AnnotationSpec("lesion", AnnotationType.SEGMENTATION),
    ]

    def predict_volume(self, model_input, **kwargs):
        results = []
        for resource in model_input:
            pixels = resource.pixels
            # A multi-channel case (D, H, W, C): the first channel holds the labels.
            values = expected_prediction(pixels[..., 0] if pixels.ndim == 4 else pixels)
            results.append(
                [
                    SegmentationAnnotation(name, values == value, scope="volume")
                    for value, name in LABELS.items()
                ]
            )
        return results


def expected_prediction(pixels: np.ndarray) -> np.ndarray:
    """The label map the model predicts for an image."""
    return np.rint(np.asarray(pixels, dtype=np.float64)).astype(np.uint8)


def label_map(shape=(24, 20, 8)) -> np.ndarray:
    """An organ (1) with a lesion (2) inside it, in nibabel's (x, y, z) order."""
    labels = np.zeros(shape, dtype=np.uint8)
    labels[4:18, 3:15, 1:7] = 1
    labels[8:12, 6:10, 3:5] = 2
    return labels


def make_project(root: Path) -> Path:
    """A Decathlon-layout project of 3 NIfTI cases with anisotropic voxels (0.7 x 0.8 x 2.5 mm).

    Images are named as nnU-Net's (``case_00N_0000.nii.gz``) and labels without the channel
    suffix, as the two layouts are found in the field. ``case_000``: the image is its label
    map (a perfect prediction); ``case_001``: moved two voxels along x; ``case_002``: the
    lesion missed (painted as organ).
    """
    import nibabel

    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for index in range(3):
        labels = label_map()
        image = labels.astype(np.float32)
        if index == 1:
            image = np.roll(image, 2, axis=0)
        elif index == 2:
            image[image == 2] = 1
        name = f"case_{index:03d}"
        nibabel.save(nibabel.Nifti1Image(image, affine), root / "imagesTr" / f"{name}_0000.nii.gz")
        nibabel.save(nibabel.Nifti1Image(labels, affine), root / "labelsTr" / f"{name}.nii.gz")
        training.append({"image": f"./imagesTr/{name}_0000.nii.gz",
                         "label": f"./labelsTr/{name}.nii.gz"})
    dataset = {
        "name": "Generated",
        "labels": {"0": "background", "1": "organ", "2": "lesion"},
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(dataset), encoding="utf-8")
    return root


def make_two_channel_project(root: Path) -> Path:
    """An nnU-Net v2 raw project of 2 cases, two channel files each (``_0000``: the label map
    moved one voxel, ``_0001``: noise), labels ``{"organ": 1, "lesion": 2}``."""
    import nibabel

    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):
        labels = label_map()
        first = np.roll(labels.astype(np.float32), index, axis=1)
        second = rng.normal(size=labels.shape).astype(np.float32)
        name = f"case_{index:03d}"
        nibabel.save(nibabel.Nifti1Image(first, affine), root / "imagesTr" / f"{name}_0000.nii.gz")
        nibabel.save(nibabel.Nifti1Image(second, affine),
                     root / "imagesTr" / f"{name}_0001.nii.gz")
        nibabel.save(nibabel.Nifti1Image(labels, affine), root / "labelsTr" / f"{name}.nii.gz")
    dataset = {"channel_names": {"0": "CT", "1": "noise"},
               "labels": {"background": 0, "organ": 1, "lesion": 2},
               "numTraining": 2, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(dataset), encoding="utf-8")
    return root
