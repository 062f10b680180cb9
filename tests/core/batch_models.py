"""Models and study directories for the batch tests (importable by spawned workers).

`make_studies` writes a directory of mixed studies: volumes and images of varying sizes as
.npy and .npz, plus a few unreadable entries that must come out as failed rows.
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
UNREADABLE = ("corrupt.npy", "notes.txt", "pickled.npy")


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


def make_studies(directory: Path, count: int = 104) -> dict[str, np.ndarray]:
    """Write ``count`` readable studies and the unreadable ones; return the arrays by id."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for index in range(count):
        size = 12 + (index * 7) % 29
        if index % 4 == 3:  # an image
            array = phantom_volume(depth=3, size=size, seed=index)[1]
        else:  # a volume of 2 to 9 slices
            array = phantom_volume(depth=2 + index % 8, size=size, seed=index)
        name = f"study-{index:03d}" + (".npz" if index % 5 == 0 else ".npy")
        if name.endswith(".npz"):
            np.savez(directory / name, pixels=array)
        else:
            np.save(directory / name, array)
        arrays[name] = array
    (directory / "corrupt.npy").write_bytes(b"this is not an array")
    (directory / "notes.txt").write_text("not an image")
    np.save(directory / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return arrays
