"""The vocabulary of a Datamint model: what task it does and how it can be asked to predict."""

from __future__ import annotations

from enum import Enum


class TaskType(str, Enum):
    """Medical-AI task categories.

    The ``str`` mixin keeps values JSON-ready in MLflow metadata without ``.value`` calls.
    """

    ANOMALY_DETECTION = "anomaly_detection"
    IMAGE_CLASSIFICATION = "image_classification"
    IMAGE_SEGMENTATION = "image_segmentation"
    INSTANCE_SEGMENTATION = "instance_segmentation"
    LANDMARK_DETECTION = "landmark_detection"
    MULTILABEL_IMAGE_CLASSIFICATION = "multilabel_image_classification"
    OBJECT_DETECTION = "object_detection"
    REPORT_GENERATION = "report_generation"
    VIDEO_FRAME_CLASSIFICATION = "video_frame_classification"
    VIDEO_SEGMENTATION = "video_segmentation"
    VOLUME_CLASSIFICATION = "volume_classification"
    VOLUME_SEGMENTATION = "volume_segmentation"

    @classmethod
    def parse(cls, value: TaskType | str) -> TaskType:
        """Return the member for ``value`` (a member or its string).

        Raises:
            ValueError: ``value`` names no task type; the message lists the valid ones.
        """
        return _parse(cls, value, "task type")


class PredictionMode(str, Enum):
    """How a model is asked to predict; each mode has a ``predict_<value>`` handler."""

    DEFAULT = "default"
    IMAGE = "image"
    FRAME = "frame"
    ALL_FRAMES = "all_frames"
    FRAME_RANGE = "frame_range"
    TEMPORAL_SEQUENCE = "temporal_sequence"
    SLICE = "slice"
    PRIMARY_SLICE = "primary_slice"
    SLICE_RANGE = "slice_range"
    VOLUME = "volume"
    INTERACTIVE = "interactive"
    FEW_SHOT = "few_shot"

    @classmethod
    def parse(cls, value: PredictionMode | str) -> PredictionMode:
        """Return the member for ``value`` (a member or its string).

        Raises:
            ValueError: ``value`` names no mode; the message lists the valid ones.
        """
        return _parse(cls, value, "prediction mode")


def _parse(enum_cls: type[Enum], value: object, what: str):  # type: ignore[no-untyped-def]
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except ValueError:
        valid = ", ".join(repr(member.value) for member in enum_cls)
        raise ValueError(f"Unknown {what} {value!r}; valid values are: {valid}.") from None
