"""MLflow tracking and model-registry stores for ``datamint://host[:port][/path]`` URIs.

Registered on MLflow's ``mlflow.tracking_store`` and ``mlflow.model_registry_store`` entry
points for the ``datamint`` scheme only. They are MLflow's own REST stores, pointed at the
platform's MLflow server (the configured ``DATAMINT_MLFLOW_URL``, https unless it is this
machine) with the :mod:`~datamint_core.platform.auth` request auth, and they differ in three
ways:

- experiments are scoped to a Datamint project: ``create_experiment`` and
  ``get_experiment_by_name`` send the project id (the active project's by default) and a
  created experiment carries the ``datamint.project_id`` tag;
- artifact locations the server gives as ``mlflow-artifacts:/…`` are handed to MLflow as
  ``datamint:/…`` (and back to the server as they were), so they are read and written through
  :class:`~datamint_core.platform.artifacts.DatamintArtifactsRepository` with the same auth;
- a rejected key (HTTP 401/403) raises :class:`PlatformAuthError` naming
  ``DATAMINT_API_KEY``; creating the store checks the key once, without retries.
"""

from __future__ import annotations

import json
from typing import Any

from mlflow.entities import Experiment, ExperimentTag
from mlflow.environment_variables import (
    MLFLOW_TRACKING_CLIENT_CERT_PATH,
    MLFLOW_TRACKING_INSECURE_TLS,
    MLFLOW_TRACKING_SERVER_CERT_PATH,
)
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2
from mlflow.protos.service_pb2 import CreateExperiment, GetExperimentByName
from mlflow.store.model_registry.rest_store import RestStore as RegistryRestStore
from mlflow.store.tracking.rest_store import RestStore
from mlflow.utils.proto_json_utils import message_to_json
from mlflow.utils.rest_utils import MlflowHostCreds, http_request

from datamint_core import _mlflow_internals
from datamint_core._messages import shorten
from datamint_core.errors import PlatformAuthError, PlatformUnreachableError
from datamint_core.platform.config import AUTH_NAME, SCHEME, PlatformSettings, load_settings
from datamint_core.platform.projects import (
    get_active_project,
    get_active_project_id,
    project_is_set,
)

#: The experiment tag that records which Datamint project an experiment belongs to.
PROJECT_TAG = "datamint.project_id"
SERVER_ARTIFACT_SCHEME = "mlflow-artifacts:"
CLIENT_ARTIFACT_SCHEME = f"{SCHEME}:"
#: Fields that hold artifact locations, in MLflow's protos and REST bodies.
_LOCATION_FIELDS = frozenset({"artifact_uri", "artifact_location", "source", "storage_location"})
_PROBE_ENDPOINT = "/api/2.0/mlflow/experiments/search"


def platform_host_creds(http_url: str) -> MlflowHostCreds:
    """Credentials for the platform's MLflow server: the scoped auth, never a bare token."""
    return MlflowHostCreds(
        http_url,
        auth=AUTH_NAME,
        ignore_tls_verification=MLFLOW_TRACKING_INSECURE_TLS.get(),
        client_cert_path=MLFLOW_TRACKING_CLIENT_CERT_PATH.get(),
        server_cert_path=MLFLOW_TRACKING_SERVER_CERT_PATH.get(),
    )


def check_platform_access(creds: MlflowHostCreds, settings: PlatformSettings) -> None:
    """One request, no retries: is the server there, and does it take the key?

    Raises:
        PlatformAuthError: HTTP 401/403.
        PlatformUnreachableError: no answer within ``settings.timeout_s``.
    """
    try:
        response = http_request(
            creds, _PROBE_ENDPOINT, "GET", max_retries=0, backoff_factor=0,
            timeout=settings.timeout_s, params={"max_results": 1},
        )
    except MlflowException as error:
        raise PlatformUnreachableError(
            f"Cannot reach the Datamint MLflow server at {creds.host} within "
            f"{settings.timeout_s:g} s ({_first_line(error)}). Check DATAMINT_MLFLOW_URL / "
            "DATAMINT_API_URL and the network (DATAMINT_PLATFORM_TIMEOUT sets the wait)."
        ) from None
    if response.status_code in (401, 403):
        raise _auth_error(creds.host, response.status_code)


class _PlatformCalls:
    """What both stores add to MLflow's REST stores: URI translation and auth errors."""

    _http_url: str

    def _call_endpoint(self, api: Any, json_body: Any = None, *args: Any, **kwargs: Any) -> Any:
        try:
            response = super()._call_endpoint(  # type: ignore[misc]
                api, _locations_for_server(json_body), *args, **kwargs
            )
        except MlflowException as error:
            status = _mlflow_internals.http_status_of(error)
            if status in (401, 403):
                raise _auth_error(self._http_url, status) from None
            raise
        _locations_for_client(response)
        return response


class DatamintStore(_PlatformCalls, RestStore):
    """The tracking store of ``datamint://`` URIs.

    Args:
        store_uri: ``datamint://host[:port][/path]``; the host must be the configured
            platform's.
        artifact_uri: unused (the server decides artifact locations); MLflow passes it.
        force_valid: check now, with one request and no retries, that the server answers and
            takes the key, so a wrong key or an unreachable platform is reported before a run
            starts rather than after MLflow's retries.

    Raises:
        PlatformConfigError: no API key, an unsafe URL, or a host that is not the platform's.
        PlatformAuthError, PlatformUnreachableError: from the check.
    """

    def __init__(self, store_uri: str, artifact_uri: str | None = None,
                 force_valid: bool = True) -> None:
        settings = load_settings()
        self._http_url = settings.http_url_for(store_uri)
        creds = platform_host_creds(self._http_url)
        super().__init__(get_host_creds=lambda: creds)
        if force_valid:
            check_platform_access(creds, settings)

    def create_run(self, experiment_id: str, *args: Any, **kwargs: Any) -> Any:
        """Create a run; with a project set, first make sure the project resolves.

        MLflow turns an error of the default-experiment provider into a warning and starts
        the run in the ``Default`` experiment; a project that cannot be resolved (unknown,
        platform unreachable, key refused) must stop the run instead.
        """
        if project_is_set():
            get_active_project()
        return super().create_run(experiment_id, *args, **kwargs)

    def create_experiment(self, name: str, artifact_location: str | None = None,
                          tags: list[ExperimentTag] | None = None,
                          project_id: str | None = None) -> str:
        """Create an experiment in ``project_id`` (by default the active project's).

        Without a project it is a plain MLflow experiment.
        """
        project_id = project_id or get_active_project_id()
        if project_id is None:
            return super().create_experiment(name, artifact_location, tags)
        tags = [t for t in (tags or []) if t.key != PROJECT_TAG]
        tags.append(ExperimentTag(PROJECT_TAG, project_id))
        body = json.loads(message_to_json(CreateExperiment(
            name=name, artifact_location=artifact_location, tags=[t.to_proto() for t in tags]
        )))
        body["project_id"] = project_id
        return self._call_endpoint(CreateExperiment, json.dumps(body)).experiment_id

    def get_experiment_by_name(self, experiment_name: str,
                               project_id: str | None = None) -> Experiment | None:
        """Return the experiment ``experiment_name`` of ``project_id`` (default: the active)."""
        project_id = project_id or get_active_project_id()
        body = json.loads(message_to_json(GetExperimentByName(experiment_name=experiment_name)))
        if project_id:
            body["project_id"] = project_id
        try:
            response = self._call_endpoint(GetExperimentByName, json.dumps(body))
        except MlflowException as error:
            if error.error_code == databricks_pb2.ErrorCode.Name(
                databricks_pb2.RESOURCE_DOES_NOT_EXIST
            ):
                return None
            raise
        return Experiment.from_proto(response.experiment)


class DatamintRegistryStore(_PlatformCalls, RegistryRestStore):
    """The model-registry store of ``datamint://`` URIs (same server, same auth)."""

    def __init__(self, store_uri: str, tracking_uri: str | None = None) -> None:
        settings = load_settings()
        self._http_url = settings.http_url_for(store_uri)
        creds = platform_host_creds(self._http_url)
        super().__init__(get_host_creds=lambda: creds)


def _auth_error(where: str, status: int) -> PlatformAuthError:
    return PlatformAuthError(
        f"The Datamint MLflow server at {where} rejected the API key (HTTP {status}). Check "
        "DATAMINT_API_KEY (or `datamint config --api-key -`)."
    )


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return shorten(text.splitlines()[0], 300) if text else type(error).__name__


def _locations_for_client(message: Any) -> None:
    """Rewrite ``mlflow-artifacts:`` locations in a response proto to ``datamint:``, in place."""
    if message is None or not hasattr(message, "ListFields"):
        return
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            for item in value if field.is_repeated else (value,):
                _locations_for_client(item)
        elif (
            field.name in _LOCATION_FIELDS
            and not field.is_repeated
            and isinstance(value, str)
            and value.startswith(SERVER_ARTIFACT_SCHEME)
        ):
            setattr(message, field.name,
                    CLIENT_ARTIFACT_SCHEME + value[len(SERVER_ARTIFACT_SCHEME):])


def _locations_for_server(json_body: Any) -> Any:
    """Rewrite ``datamint:`` locations in a request body back to ``mlflow-artifacts:``."""
    if not isinstance(json_body, str) or CLIENT_ARTIFACT_SCHEME not in json_body:
        return json_body

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: (
                    SERVER_ARTIFACT_SCHEME + value[len(CLIENT_ARTIFACT_SCHEME):]
                    if key in _LOCATION_FIELDS and isinstance(value, str)
                    and value.startswith(CLIENT_ARTIFACT_SCHEME)
                    else rewrite(value)
                )
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    try:
        return json.dumps(rewrite(json.loads(json_body)))
    except ValueError:
        return json_body
