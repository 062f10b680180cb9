"""The artifact repository of ``datamint:`` artifact URIs (the platform's proxied artifacts).

Registered on MLflow's ``mlflow.artifact_repository`` entry point for the ``datamint``
scheme. ``datamint:/<path>`` (or ``datamint://host:port/<path>``) is the platform server's
``mlflow-artifacts:/<path>``: it resolves to
``https://<platform MLflow host>/api/2.0/mlflow-artifacts/artifacts/<path>`` and is read and
written with the platform's scoped auth.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
from mlflow.utils.rest_utils import MlflowHostCreds

from datamint_core.platform.config import SCHEME, load_settings
from datamint_core.platform.store import platform_host_creds

_SERVICE_ROOT = "/api/2.0/mlflow-artifacts/artifacts"


class DatamintArtifactsRepository(MlflowArtifactsRepository):
    """MLflow's proxied-artifact repository, for ``datamint:`` URIs.

    Args:
        artifact_uri: ``datamint:/<path>`` or ``datamint://host[:port]/<path>``.
        tracking_uri: the ``datamint://`` tracking URI that a host-less URI is relative to;
            by default the configured platform.
        registry_uri: passed on to MLflow.

    Raises:
        PlatformConfigError: no API key, an unsafe URL, or a host that is not the platform's.
    """

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None,
                 registry_uri: str | None = None) -> None:
        super().__init__(artifact_uri, tracking_uri=tracking_uri or load_settings().tracking_uri,
                         registry_uri=registry_uri)

    @classmethod
    def resolve_uri(cls, artifact_uri: str, tracking_uri: str | None) -> str:
        """Return the http(s) URL of ``artifact_uri`` on the platform's MLflow server."""
        artifact = urlsplit(artifact_uri)
        tracking = urlsplit(tracking_uri or "")
        netloc = artifact.netloc or (tracking.netloc if tracking.scheme == SCHEME else "")
        base = load_settings().http_url_for(f"{SCHEME}://{netloc}")
        path = artifact.path.strip("/")
        if path.startswith(_SERVICE_ROOT.strip("/")):
            path = path[len(_SERVICE_ROOT.strip("/")):].strip("/")
        return f"{base}{_SERVICE_ROOT}/{path}".rstrip("/")

    @property
    def _host_creds(self) -> MlflowHostCreds:
        return platform_host_creds(self.artifact_uri)

    @property
    def _artifact_server_host_creds(self) -> MlflowHostCreds:
        return platform_host_creds(self.artifact_uri.partition(_SERVICE_ROOT)[0])
