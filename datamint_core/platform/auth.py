"""The request auth MLflow uses for the Datamint platform (``MLFLOW_TRACKING_AUTH=datamint``).

Registered on MLflow's ``mlflow.request_auth_provider`` entry point. The auth it returns adds
``Authorization: Bearer <DATAMINT_API_KEY>`` to a request only when the request goes to one of
the platform's origins (scheme, host and port of ``DATAMINT_API_URL`` or
``DATAMINT_MLFLOW_URL``) and never over plain HTTP to another machine; any other request
leaves unchanged. ``requests`` drops the header on a redirect to another host.
"""

from __future__ import annotations

from typing import Any

from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider
from requests.auth import AuthBase

from datamint_core.platform.config import AUTH_NAME, is_loopback, load_settings, origin


class PlatformKeyAuth(AuthBase):
    """Adds the API key to requests bound for the Datamint platform, and to no others."""

    def __call__(self, request: Any) -> Any:
        settings = load_settings()
        target = origin(request.url)
        if not settings.api_key or target not in settings.key_origins():
            return request
        if target[0] != "https" and not is_loopback(target[1]):
            return request
        request.headers["Authorization"] = f"Bearer {settings.api_key}"
        return request


class DatamintAuthProvider(RequestAuthProvider):
    """MLflow's hook for :class:`PlatformKeyAuth`, selected by ``MLFLOW_TRACKING_AUTH=datamint``."""

    def get_name(self) -> str:
        return AUTH_NAME

    def get_auth(self) -> PlatformKeyAuth:
        return PlatformKeyAuth()
