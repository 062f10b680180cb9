"""Fixtures for the integration suite: a real ``mlflow server`` started and stopped here."""

from __future__ import annotations

import pytest

from tests.integration.mlflow_server import MlflowServer, mlflow_server, tracking_into

__all__ = ["mlflow_server", "tracking_on"]


@pytest.fixture
def tracking_on(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch):
    """Track into the server; requests time out after 10 s (model downloads)."""
    with tracking_into(mlflow_server, monkeypatch, request_timeout_s=10) as server:
        yield server
