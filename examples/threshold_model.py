"""A small numpy model, saved from code: MLflow runs this file to load it (no pickle).

It implements only ``predict_image``. The router serves ``slice`` through it (one slice of
a volume, as a view) and ``volume`` through ``slice`` (every axial slice), and stacks the
slice masks back into one volume mask that keeps the volume's spacing.
"""

import mlflow
import numpy as np

from datamint_core import (
    AnnotationSpec,
    AnnotationType,
    BaseDatamintModel,
    SegmentationAnnotation,
    TaskType,
)


class ThresholdSegmenter(BaseDatamintModel):
    """Segments everything brighter than ``threshold`` (in the image's own units)."""

    task_type = TaskType.VOLUME_SEGMENTATION
    annotation_specs = [
        AnnotationSpec(
            "lesion", AnnotationType.SEGMENTATION, description="voxels above the threshold"
        )
    ]
    threshold = 0.5

    def predict_image(self, model_input, **kwargs):
        results = []
        for resource in model_input:
            mask = resource.pixels > self.threshold
            confidence = float(np.clip(resource.pixels[mask].mean(), 0, 1)) if mask.any() else None
            results.append([SegmentationAnnotation("lesion", mask, confidence=confidence)])
        return results


mlflow.models.set_model(ThresholdSegmenter())
