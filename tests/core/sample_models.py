"""Small numpy models shared by the core tests.

They live in an importable module (not in a test file) so that a model pickled by one test
process can be unpickled by another.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datamint_core import (
    AnnotationSpec,
    AnnotationType,
    BaseDatamintModel,
    CategoryAnnotation,
    PredictionMode,
    SegmentationAnnotation,
    TaskType,
    prediction_mode,
)


class ThresholdSegmenter(BaseDatamintModel):
    """Marks pixels above a threshold as ``bright``; implements only ``predict_image``."""

    task_type = TaskType.VOLUME_SEGMENTATION
    annotation_specs = [AnnotationSpec("bright", AnnotationType.SEGMENTATION)]

    def __init__(self, threshold: float = 0.5, settings: Any = None) -> None:
        super().__init__(settings)
        self.threshold = threshold

    def predict_image(self, model_input, **kwargs):
        return [
            [SegmentationAnnotation("bright", r.pixels > self.threshold, confidence=0.9)]
            for r in model_input
        ]


class MeanClassifier(BaseDatamintModel):
    """Only ``predict_default``: calls whole resources bright or dark by their mean."""

    task_type = TaskType.IMAGE_CLASSIFICATION

    def predict_default(self, model_input, **kwargs):
        return [
            [
                CategoryAnnotation(
                    "brightness",
                    "bright" if r.pixels.mean() > 0.5 else "dark",
                    confidence=float(r.pixels.mean().clip(0, 1)),
                )
            ]
            for r in model_input
        ]


class PlainObjectModel:
    """Not a Datamint model: an object with handler methods, for save_model to wrap."""

    task_type = "image_classification"

    def predict_default(self, model_input, **kwargs):
        return [[CategoryAnnotation("kind", "anything")] for _ in model_input]

    @prediction_mode(PredictionMode.FRAME, param_keys=("frame_index",))
    def classify_frame(self, model_input, *, frame_index):
        return [[CategoryAnnotation("kind", f"frame-{frame_index}")] for _ in model_input]


def phantom_volume(depth: int = 12, size: int = 32, seed: int = 0) -> np.ndarray:
    """A noisy dark volume with a bright sphere in the middle."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:depth, :size, :size]
    sphere = ((z - depth / 2) / (depth / 3)) ** 2 + ((y - size / 2) ** 2 + (x - size / 2) ** 2) / (
        size / 4
    ) ** 2 <= 1
    return (rng.random((depth, size, size)) * 0.3 + sphere * 0.6).astype(np.float32)
