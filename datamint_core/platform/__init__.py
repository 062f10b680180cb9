"""The Datamint platform layer: settings, projects, and MLflow plugins for ``datamint://``.

Importing it (and ``datamint_core``) only reads the settings and sets environment variables
when an API key is configured; it makes no network call and never replaces a tracking URI
the user set. The MLflow plugins (:class:`DatamintStore`, :class:`DatamintRegistryStore`,
:class:`DatamintArtifactsRepository`, :class:`DatamintExperimentProvider`,
:class:`DatamintAuthProvider`) are loaded by MLflow through its entry points, or on first
access here.
"""

from __future__ import annotations

import importlib
from typing import Any

from datamint_core import _extensions
from datamint_core.errors import (
    PlatformAuthError,
    PlatformConfigError,
    PlatformRequestError,
    PlatformUnreachableError,
    ProjectNotFoundError,
)
from datamint_core.platform import predictions as _predictions
from datamint_core.platform.client import PlatformClient
from datamint_core.platform.config import (
    EnvVars,
    PlatformSettings,
    config_path,
    load_settings,
    write_config_file,
)
from datamint_core.platform.environment import ensure_mlflow_configured, setup_mlflow_environment
from datamint_core.platform.projects import (
    Project,
    get_active_project,
    get_active_project_id,
    set_project,
)

# The model (domain layer) logs predictions through this hook, never by importing the platform.
_extensions.register_prediction_logger(_predictions.log_predictions)

_PLUGINS = {
    "DatamintStore": "datamint_core.platform.store",
    "DatamintRegistryStore": "datamint_core.platform.store",
    "DatamintArtifactsRepository": "datamint_core.platform.artifacts",
    "DatamintExperimentProvider": "datamint_core.platform.experiment",
    "DatamintAuthProvider": "datamint_core.platform.auth",
}

__all__ = [
    "DatamintArtifactsRepository",
    "DatamintAuthProvider",
    "DatamintExperimentProvider",
    "DatamintRegistryStore",
    "DatamintStore",
    "EnvVars",
    "PlatformAuthError",
    "PlatformClient",
    "PlatformConfigError",
    "PlatformRequestError",
    "PlatformSettings",
    "PlatformUnreachableError",
    "Project",
    "ProjectNotFoundError",
    "config_path",
    "ensure_mlflow_configured",
    "get_active_project",
    "get_active_project_id",
    "load_settings",
    "set_project",
    "setup_mlflow_environment",
    "write_config_file",
]


def __getattr__(name: str) -> Any:
    """Import the MLflow plugins (which import MLflow's REST stores) only when used."""
    if name in _PLUGINS:
        return getattr(importlib.import_module(_PLUGINS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
