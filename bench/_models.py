"""Trivial models for the benchmarks: handlers that do almost nothing.

They live in an importable module, not in ``__main__`` (``bench/``, the scripts' directory,
is on ``sys.path``), so cloudpickle stores the class by reference, as it would a user's model
class, and loading a saved model imports it again.
"""

from __future__ import annotations

from typing import Any

from datamint_core import BaseDatamintModel, BaseResource, CategoryAnnotation, TaskType

#: What the constant classifier says about every image.
BENIGN_FINDING = CategoryAnnotation("finding", "benign")
_PER_IMAGE = [BENIGN_FINDING]


class ConstantClassifier(BaseDatamintModel):
    """Calls every image benign: one ``CategoryAnnotation`` per input, no computation."""

    task_type = TaskType.IMAGE_CLASSIFICATION

    def predict_image(self, model_input: list[BaseResource], **kwargs: Any
                      ) -> list[list[CategoryAnnotation]]:
        return [_PER_IMAGE] * len(model_input)


class ScaledMean(BaseDatamintModel):
    """A child for the linked-model benchmark: the mean pixel value times ``factor``."""

    task_type = TaskType.ANOMALY_DETECTION

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def predict_default(self, model_input: list[BaseResource], **kwargs: Any) -> list[list]:
        from datamint_core import NumericAnnotation

        return [[NumericAnnotation("score", float(r.pixels.mean()) * self.factor)]
                for r in model_input]


class Parent(BaseDatamintModel):
    """A parent that only loads its linked models (the benchmark times loading)."""

    def predict_default(self, model_input: list[BaseResource], **kwargs: Any) -> list[list]:
        return [[] for _ in model_input]
