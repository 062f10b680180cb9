"""A model saved from code: MLflow runs this file at load time instead of unpickling."""

import mlflow

from datamint_core import (
    AnnotationSpec,
    AnnotationType,
    BaseDatamintModel,
    SegmentationAnnotation,
    TaskType,
)


class CodeThresholdSegmenter(BaseDatamintModel):
    task_type = TaskType.VOLUME_SEGMENTATION
    annotation_specs = [AnnotationSpec("bright", AnnotationType.SEGMENTATION)]

    def predict_image(self, model_input, **kwargs):
        threshold = 0.5
        return [[SegmentationAnnotation("bright", r.pixels > threshold)] for r in model_input]


mlflow.models.set_model(CodeThresholdSegmenter())
