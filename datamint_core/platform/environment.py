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

from datamint_core.errors import PlatformConfigError
from datamint_core.platform.config import AUTH_NAME, load_settings

_logger = logging.getLogger(__name__)

TRACKING_URI = "MLFLOW_TRACKING_URI"
TRACKING_AUTH = "MLFLOW_TRACKING_AUTH"


def setup_mlflow_environment(overwrite: bool = False, set_mlflow: bool = True) -> bool:
    """Set MLflow's environment from the Datamint settings; return whether that was done.

    Args:
        overwrite: replace an ``MLFLOW_TRACKING_URI`` / ``MLFLOW_TRACKING_AUTH`` already set.
        set_mlflow: also call ``mlflow.set_tracking_uri`` (and ``set_registry_uri``) with the
            platform's URI when it is the one in effect.

    Returns:
        ``True`` when the settings are complete and safe and MLflow now points at (or was
        already pointed at) a tracking server. ``False``, with nothing changed, when they are
        incomplete (no API key), unsafe (plain HTTP to another machine: the key would travel
        in clear text), malformed, or the config file is unreadable; the reason is logged
        (a warning, except for the plain absence of a key) and
        :func:`ensure_mlflow_configured` raises it.

    Example:
        >>> if not setup_mlflow_environment():   # doctest: +SKIP
        ...     print("tracking stays where MLFLOW_TRACKING_URI says")
    """
    try:
        settings = load_settings()
        if not settings.configured:
            _logger.debug("no Datamint API key configured; MLflow's configuration is left as is")
            return False
        settings.check()
    except PlatformConfigError as error:
        _logger.warning("Datamint settings not applied, MLflow's configuration is left as is: %s",
                        error)
        return False
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
    """Configure MLflow for the Datamint platform, or say which setting is missing or unsafe.

    Raises:
        ValueError: (a :class:`PlatformConfigError`) the Datamint settings are unsafe,
            malformed or unreadable, or no API key is configured and MLflow has no tracking
            URI of its own.
    """
    if setup_mlflow_environment():
        return
    settings = load_settings()  # raises when the config file is unreadable
    if settings.configured or not os.environ.get(TRACKING_URI):
        settings.check()  # raises, naming the missing or unsafe setting


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
