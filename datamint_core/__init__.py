"""datamint_core: medical-imaging models as first-class MLflow models.

Pure core: numpy and mlflow-skinny only. It never imports torch or lightning; the
``datamint_torch`` and ``datamint_lightning`` extras build on it.
"""

from datamint_core.annotations import (
    Annotation,
    AnnotationScope,
    AnnotationSpec,
    AnnotationType,
    BoxAnnotation,
    CategoryAnnotation,
    LineAnnotation,
    NumericAnnotation,
    PointAnnotation,
    SegmentationAnnotation,
    TextAnnotation,
)
from datamint_core.artifact_cache import ArtifactCache
from datamint_core.enums import PredictionMode, TaskType
from datamint_core.flavor import FLAVOR_NAME, load_model, log_model, save_model
from datamint_core.linked_models import (
    LinkedModelError,
    LinkedModelNotFoundError,
    LinkSettings,
    TrackingServerUnreachableError,
)
from datamint_core.model import BaseDatamintModel, WrappedModel
from datamint_core.resources import (
    BaseResource,
    ImageResource,
    ResourceError,
    VideoResource,
    VolumeResource,
)
from datamint_core.routing import ModeSpec, PredictionRouter, prediction_mode
from datamint_core.settings import ModelSettings
from datamint_core.validation import ValidationReport, validate_model
from datamint_core.version import __version__

__all__ = [
    "FLAVOR_NAME",
    "Annotation",
    "AnnotationScope",
    "AnnotationSpec",
    "AnnotationType",
    "ArtifactCache",
    "BaseDatamintModel",
    "BaseResource",
    "BoxAnnotation",
    "CategoryAnnotation",
    "ImageResource",
    "LineAnnotation",
    "LinkSettings",
    "LinkedModelError",
    "LinkedModelNotFoundError",
    "ModeSpec",
    "ModelSettings",
    "NumericAnnotation",
    "PointAnnotation",
    "PredictionMode",
    "PredictionRouter",
    "ResourceError",
    "SegmentationAnnotation",
    "TaskType",
    "TextAnnotation",
    "TrackingServerUnreachableError",
    "ValidationReport",
    "VideoResource",
    "VolumeResource",
    "WrappedModel",
    "__version__",
    "load_model",
    "log_model",
    "prediction_mode",
    "save_model",
    "validate_model",
]
