"""datamint_core: medical-imaging models as first-class MLflow models.

Pure core: numpy and mlflow-skinny only. It never imports torch or lightning; the
``datamint_torch`` and ``datamint_lightning`` extras build on it.

The names that need MLflow (the model, the flavor, linked models, validation, the dataset)
are imported on first use. Besides keeping ``import datamint_core`` cheap, this lets MLflow
load the ``datamint://`` plugins (``datamint_core.platform``) while MLflow itself is still
being imported, which an eager ``import mlflow.pyfunc`` here would turn into a circular
import.
"""

from typing import TYPE_CHECKING, Any

from datamint_core import _extensions
from datamint_core._limits import request_limits
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
from datamint_core.errors import (
    BatchInputError,
    CacheError,
    CacheNotWritableError,
    CorruptedCacheEntryError,
    DatamintError,
    EvaluationInputError,
    InputTooLargeError,
    InvalidRequestError,
    LinkedModelError,
    LinkedModelNotFoundError,
    MalformedRequestError,
    ModelLoadError,
    OutputInUseError,
    OutputMismatchError,
    PatchResultError,
    PathNotAllowedError,
    PlatformAuthError,
    PlatformConfigError,
    PlatformRequestError,
    PlatformUnreachableError,
    ProjectDataError,
    ProjectNotFoundError,
    PromptError,
    RequestDeadlineExceeded,
    ResourceError,
    ResultShapeError,
    TrackingServerUnreachableError,
    UnsupportedModeError,
)
from datamint_core.platform import (
    EnvVars,
    ensure_mlflow_configured,
    set_project,
    setup_mlflow_environment,
)
from datamint_core.platform.environment import configure_on_import as _configure_on_import
from datamint_core.prompts import (
    Box,
    FewShotExample,
    LabelPrompts,
    Point,
    Prompts,
    Scribble,
)
from datamint_core.resources import (
    BaseResource,
    ImageResource,
    VideoResource,
    VolumeResource,
)
from datamint_core.routing import ModeSpec, PredictionRouter, prediction_mode
from datamint_core.settings import ModelSettings
from datamint_core.version import __version__

if TYPE_CHECKING:
    from datamint_core.dataset import DatamintDatasetSource, DatamintMLflowDataset
    from datamint_core.flavor import FLAVOR_NAME, load_model, log_model, save_model
    from datamint_core.linked_models import LinkSettings
    from datamint_core.model import BaseDatamintModel, WrappedModel
    from datamint_core.training import ImageDataset
    from datamint_core.validation import ValidationReport, validate_model

#: Public names imported on first use, and the module each comes from.
_LAZY = {
    "DatamintDatasetSource": "datamint_core.dataset",
    "DatamintMLflowDataset": "datamint_core.dataset",
    "FLAVOR_NAME": "datamint_core.flavor",
    "load_model": "datamint_core.flavor",
    "log_model": "datamint_core.flavor",
    "save_model": "datamint_core.flavor",
    "LinkSettings": "datamint_core.linked_models",
    "BaseDatamintModel": "datamint_core.model",
    "WrappedModel": "datamint_core.model",
    "ImageDataset": "datamint_core.training",
    "ValidationReport": "datamint_core.validation",
    "validate_model": "datamint_core.validation",
}


def _linked_models() -> _extensions.LinkedModelSupport:
    from datamint_core.linked_models import MODEL_SUPPORT  # registers itself in our place

    return MODEL_SUPPORT


# The model (domain layer) reaches linked models through a hook. datamint_core.linked_models
# imports MLflow, so until a model first links one this stand-in holds its place.
_extensions.register_linked_model_support(
    _extensions.LinkedModelSupport(
        check_uris=lambda uris: _linked_models().check_uris(uris),
        load=lambda uris, **arguments: _linked_models().load(uris, **arguments),
    )
)


def _read_file(path: str, kind: str | None) -> Any:
    """Read a resource's file with :mod:`datamint_core.io` (imported on first use, so that
    ``import datamint_core`` stays cheap)."""
    from datamint_core.io._read import decode_path

    return decode_path(path, kind)


# A resource (domain layer) reads a DICOM, NIfTI or image path through this hook: the io
# readers build resources, so resources never import them back.
_extensions.register_file_reader(_read_file)

# As the seed's `import datamint.mlflow`: point MLflow at the Datamint platform when an API key
# is configured. Environment variables only: no network call, and an explicitly set
# MLFLOW_TRACKING_URI is left alone.
_configure_on_import()

__all__ = [
    "FLAVOR_NAME",
    "Annotation",
    "AnnotationScope",
    "AnnotationSpec",
    "AnnotationType",
    "ArtifactCache",
    "BaseDatamintModel",
    "BaseResource",
    "BatchInputError",
    "Box",
    "BoxAnnotation",
    "CacheError",
    "CacheNotWritableError",
    "CategoryAnnotation",
    "CorruptedCacheEntryError",
    "DatamintDatasetSource",
    "DatamintError",
    "DatamintMLflowDataset",
    "EnvVars",
    "EvaluationInputError",
    "FewShotExample",
    "ImageDataset",
    "ImageResource",
    "InputTooLargeError",
    "InvalidRequestError",
    "LabelPrompts",
    "LineAnnotation",
    "LinkSettings",
    "LinkedModelError",
    "LinkedModelNotFoundError",
    "MalformedRequestError",
    "ModeSpec",
    "ModelLoadError",
    "ModelSettings",
    "NumericAnnotation",
    "OutputInUseError",
    "OutputMismatchError",
    "PatchResultError",
    "PathNotAllowedError",
    "PlatformAuthError",
    "PlatformConfigError",
    "PlatformRequestError",
    "PlatformUnreachableError",
    "Point",
    "PointAnnotation",
    "PredictionMode",
    "PredictionRouter",
    "ProjectDataError",
    "ProjectNotFoundError",
    "PromptError",
    "Prompts",
    "RequestDeadlineExceeded",
    "ResourceError",
    "ResultShapeError",
    "Scribble",
    "SegmentationAnnotation",
    "TaskType",
    "TextAnnotation",
    "TrackingServerUnreachableError",
    "UnsupportedModeError",
    "ValidationReport",
    "VideoResource",
    "VolumeResource",
    "WrappedModel",
    "__version__",
    "ensure_mlflow_configured",
    "load_model",
    "log_model",
    "prediction_mode",
    "request_limits",
    "save_model",
    "set_project",
    "setup_mlflow_environment",
    "validate_model",
]



def __getattr__(name: str) -> object:
    """Import a public name that needs MLflow on first use (PEP 562)."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
