"""Point MLflow at the Datamint platform from the user's Datamint settings.

What :func:`setup_mlflow_environment` sets, when an API key is configured::

    MLFLOW_TRACKING_URI   datamint://<platform MLflow host:port>   unless already set
    MLFLOW_TRACKING_AUTH  datamint (adds the key for the platform's hosts only)
                                                                   unless already set

The key itself is never put in the environment (no ``MLFLOW_TRACKING_TOKEN``, which MLflow
would send to whatever server the tracking URI names).
"""

from __future__ import annotations

import logging
import os

from datamint_core.platform.config import AUTH_NAME, PlatformConfigError, load_settings

_logger = logging.getLogger(__name__)

TRACKING_URI = "MLFLOW_TRACKING_URI"
TRACKING_AUTH = "MLFLOW_TRACKING_AUTH"


def setup_mlflow_environment(overwrite: bool = False, set_mlflow: bool = True) -> bool:
    """Set MLflow's environment from the Datamint settings; return whether they were complete.

    Args:
        overwrite: replace an ``MLFLOW_TRACKING_URI`` / ``MLFLOW_TRACKING_AUTH`` already set.
        set_mlflow: also call ``mlflow.set_tracking_uri`` (and ``set_registry_uri``) with the
            platform's URI when it is the one in effect.

    Returns:
        ``True`` when an API key is configured and MLflow now points at (or was already
        pointed at) a tracking server; ``False`` when no API key is configured (nothing is
        changed then).

    Raises:
        PlatformConfigError: a configured URL is unsafe (plain HTTP to another machine) or
            malformed, or the config file is unreadable.
    """
    settings = load_settings()
    if not settings.configured:
        _logger.debug("no Datamint API key configured; MLflow's configuration is left as is")
        return False
    settings.check()
    uri = settings.tracking_uri
    if overwrite or not os.environ.get(TRACKING_URI):
        os.environ[TRACKING_URI] = uri
    if overwrite or not os.environ.get(TRACKING_AUTH):
        os.environ[TRACKING_AUTH] = AUTH_NAME
    if set_mlflow and os.environ[TRACKING_URI] == uri:
        import mlflow

        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    return True


def ensure_mlflow_configured() -> None:
    """Configure MLflow for the Datamint platform, or say which setting is missing.

    Raises:
        ValueError: (a :class:`PlatformConfigError`) no API key is configured and MLflow has no
            tracking URI of its own, or a configured URL is unsafe.
    """
    if setup_mlflow_environment():
        return
    if not os.environ.get(TRACKING_URI):
        load_settings().check()  # raises, naming DATAMINT_API_KEY


def configure_on_import() -> None:
    """What ``import datamint_core`` does: environment variables only, no network, no mlflow.

    Never raises: an unreadable or unsafe configuration is reported when MLflow first uses
    the ``datamint://`` store (and by :func:`ensure_mlflow_configured`).
    """
    try:
        settings = load_settings()
        if not settings.configured:
            return
        if not os.environ.get(TRACKING_URI):
            os.environ[TRACKING_URI] = settings.tracking_uri
        if not os.environ.get(TRACKING_AUTH):
            os.environ[TRACKING_AUTH] = AUTH_NAME
    except PlatformConfigError as error:
        _logger.debug("Datamint settings not applied at import: %s", error)
