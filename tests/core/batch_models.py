"""Models and study directories for the batch tests (importable by spawned workers).

`make_studies` writes a directory of mixed studies: volumes and images of varying sizes as
.npy and .npz, DICOM series, NIfTI and PNG, plus a few unreadable entries that must come
out as failed rows.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from datamint_core import (
    AnnotationSpec,
    AnnotationType,
    BaseDatamintModel,
    CategoryAnnotation,
    SegmentationAnnotation,
    TaskType,
)
from tests.core.sample_models import phantom_volume

#: Set to a file path: every model load appends "<pid>\n" to it.
LOAD_LOG_ENV = "DATAMINT_TEST_LOAD_LOG"
UNREADABLE = ("corrupt.npy", "notes.txt", "pickled.npy", "empty-series")


class TwoLabelModel(BaseDatamintModel):
    """Per image: a ``bright`` mask and a ``contrast`` category (two annotations per input)."""

    task_type = TaskType.IMAGE_SEGMENTATION
    annotation_specs = [
        AnnotationSpec("bright", AnnotationType.SEGMENTATION),
        AnnotationSpec("contrast", AnnotationType.CATEGORY),
    ]

    def __init__(self, seconds_per_image: float = 0.0) -> None:
        super().__init__()
        self.seconds_per_image = seconds_per_image

    def load_context(self, context) -> None:
        super().load_context(context)
        log = os.environ.get(LOAD_LOG_ENV)
        if log:
            with open(log, "a") as file:
                file.write(f"{os.getpid()}\n")

    def predict_image(self, model_input, **kwargs):
        results = []
        for resource in model_input:
            time.sleep(self.seconds_per_image)
            pixels = resource.pixels.astype(np.float64)
            spread = float(pixels.max() - pixels.min())
            results.append(
                [
                    SegmentationAnnotation("bright", pixels > 0.5, confidence=0.9),
                    CategoryAnnotation(
                        "contrast",
                        "high" if spread > 0.5 else "low",
                        confidence=round(min(spread, 1.0), 6),
                    ),
                ]
            )
        return results


def make_studies(directory: Path, count: int = 100) -> dict[str, Path]:
    """Write ``count`` array studies, a few of each other format, and the unreadable ones.

    Array studies: volumes of 2 to 9 slices and images, 12 to 40 pixels across, as .npy and
    .npz. Other formats (read by :mod:`datamint_core.io`): two DICOM CT series directories,
    a NIfTI volume, a PNG image. Unreadable: the names in :data:`UNREADABLE`.

    Returns:
        Every readable study's path by its id (its entry name).
    """
    import nibabel
    from PIL import Image

    from tests.core.dicom_files import write_series

    directory.mkdir(parents=True, exist_ok=True)
    studies: dict[str, Path] = {}
    for index in range(count):
        size = 12 + (index * 7) % 29
        if index % 4 == 3:  # an image
            array = phantom_volume(depth=3, size=size, seed=index)[1]
        else:  # a volume of 2 to 9 slices
            array = phantom_volume(depth=2 + index % 8, size=size, seed=index)
        path = directory / (f"study-{index:03d}" + (".npz" if index % 5 == 0 else ".npy"))
        if path.suffix == ".npz":
            np.savez(path, pixels=array)
        else:
            np.save(path, array)
        studies[path.name] = path
    for name, slices, size in (("ct-series-a", 4, 24), ("ct-series-b", 3, 16)):
        write_series(directory / name, slices, size, seed=slices)
        studies[name] = directory / name
    mr = phantom_volume(depth=5, size=20, seed=7)
    nibabel.save(nibabel.Nifti1Image(mr, np.diag([0.8, 0.8, 2.5, 1.0])), directory / "mr.nii.gz")
    studies["mr.nii.gz"] = directory / "mr.nii.gz"
    xray = (phantom_volume(depth=3, size=28, seed=9)[1] * 255).astype(np.uint8)
    Image.fromarray(xray).save(directory / "xray.png")
    studies["xray.png"] = directory / "xray.png"

    (directory / "corrupt.npy").write_bytes(b"this is not an array")
    (directory / "notes.txt").write_text("not an image")
    np.save(directory / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (directory / "empty-series").mkdir()
    return studies
