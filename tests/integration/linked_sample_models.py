"""Models for the linked-model tests: two children and a parent that predicts through both."""

from __future__ import annotations

from datamint_core import (
    Annotation,
    BaseDatamintModel,
    NumericAnnotation,
    TaskType,
)


class ScaledMean(BaseDatamintModel):
    """A child: the mean pixel value times ``factor``."""

    task_type = TaskType.ANOMALY_DETECTION

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def predict_default(self, model_input, **kwargs):
        return [
            [NumericAnnotation("score", float(r.pixels.mean()) * self.factor)] for r in model_input
        ]


class Ensemble(BaseDatamintModel):
    """The parent: asks each linked model and returns all their scores, keyed by model."""

    task_type = TaskType.ANOMALY_DETECTION

    def predict_default(self, model_input, **kwargs):
        records = [r.to_dict() for r in model_input]
        per_model = {
            key: model.predict(records) for key, model in sorted(self.get_mlflow_models().items())
        }
        return [
            [
                Annotation.from_dict({**answers[i][0], "identifier": key})
                for key, answers in per_model.items()
            ]
            for i in range(len(model_input))
        ]
