"""A model that does real work per slice, for the batch benchmark (importable by workers)."""

from __future__ import annotations

from typing import Any

import numpy as np

from datamint_core import (
    BaseDatamintModel,
    BaseResource,
    CategoryAnnotation,
    SegmentationAnnotation,
    TaskType,
)


class SmoothedThreshold(BaseDatamintModel):
    """Per image: a 5x5 box filter, then a mask of what is above 0.5 and a category."""

    task_type = TaskType.IMAGE_SEGMENTATION

    def predict_image(self, model_input: list[BaseResource], **kwargs: Any) -> list[list[Any]]:
        results = []
        for resource in model_input:
            pixels = resource.pixels.astype(np.float32)
            padded = np.pad(pixels, 2, mode="edge")
            window = np.lib.stride_tricks.sliding_window_view(padded, (5, 5))
            smoothed = window.mean(axis=(-1, -2))
            mask = smoothed > 0.5
            results.append(
                [
                    SegmentationAnnotation("lesion", mask, confidence=0.8),
                    CategoryAnnotation("finding", "present" if mask.any() else "absent"),
                ]
            )
        return results
