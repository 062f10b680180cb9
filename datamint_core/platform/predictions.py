"""``log_predictions=True``: send a prediction's annotations to the Datamint platform.

The platform sends ``log_predictions`` (and ``model_name``) with the predictions it asks a
served model for. With the platform configured (an API key), each input's annotations are
posted to its API (see :mod:`~datamint_core.platform.client` for the contract), under the
input's resource id and the active project. Without a configured platform, or when the
upload fails, the prediction is still returned and one warning says the annotations were not
sent: logging never costs the caller its result.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

from datamint_core.platform.config import load_settings

_logger = logging.getLogger(__name__)
_warned: set[str] = set()


def log_predictions(resources: Sequence[Any], results: Sequence[Sequence[Any]],
                    model_name: str | None = None) -> bool:
    """Post each resource's annotations to the platform; return whether they were sent."""
    from datamint_core.platform.client import PlatformClient
    from datamint_core.platform.projects import get_active_project_id

    settings = load_settings()
    if not settings.configured:
        _warn_once(
            "log_predictions=True, but no Datamint platform is configured (DATAMINT_API_KEY "
            "is not set); the predictions were returned but not sent."
        )
        return False
    try:
        client = PlatformClient(settings)
        project_id = get_active_project_id()
        for resource, annotations in zip(resources, results, strict=True):
            client.log_predictions(
                getattr(resource, "id", None),
                [annotation.to_dict() for annotation in annotations],
                model_name,
                project_id,
            )
    except (OSError, ValueError, LookupError, RuntimeError) as error:
        _warn_once(f"log_predictions=True, but the predictions were not sent: {error}")
        return False
    return True


def _warn_once(message: str) -> None:
    key = message.split(":", 1)[0]
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    _logger.debug(message)
