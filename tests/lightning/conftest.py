"""The Lightning suite runs only where Lightning is installed (the full environment)."""

from __future__ import annotations

import pytest

pytest.importorskip("lightning", reason="the lightning suite needs the [lightning] extra")

from tests.integration.mlflow_server import MlflowServer, mlflow_server, tracking_into

__all__ = ["mlflow_server", "server_tracking"]


@pytest.fixture
def server_tracking(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch):
    """Track into the server; requests time out after 3 s, so an outage is noticed fast."""
    with tracking_into(mlflow_server, monkeypatch, request_timeout_s=3) as server:
        yield server
