"""Fixtures for the integration suite: a real ``mlflow server`` started and stopped here."""

from __future__ import annotations

import mlflow
import pytest

from tests.integration.mlflow_server import MlflowServer


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A running tracking server (SQLite backend, proxied artifacts) for one test module."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tracking_on(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch):
    """Point this process (and its children) at the server, failing fast when it is down."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    mlflow.set_tracking_uri(mlflow_server.uri)
    mlflow.set_registry_uri(mlflow_server.uri)
    yield mlflow_server
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
