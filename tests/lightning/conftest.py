"""The Lightning suite runs only where Lightning is installed (the full environment)."""

from __future__ import annotations

import pytest

pytest.importorskip("lightning", reason="the lightning suite needs the [lightning] extra")

from tests.integration.mlflow_server import MlflowServer


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``mlflow server`` (SQLite backend, proxied artifacts) for one test module."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server_tracking(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch):
    """Track into the server, and fail fast (no retries, short timeout) while it is down."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    mlflow.set_tracking_uri(mlflow_server.uri)
    mlflow.set_registry_uri(mlflow_server.uri)
    yield mlflow_server
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
