"""The top-level model goes through the artifact cache, against a real ``mlflow server``.

``load_model("models:/...")``, ``datamint predict`` and ``datamint serve`` find the model
the way linked models are found: the cache first (a second load downloads nothing), the
server otherwise, and no server at all in offline mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from datamint_core import ImageResource, TrackingServerUnreachableError, load_model, log_model
from tests.integration._server import call, datamint_serve
from tests.integration.linked_sample_models import ScaledMean

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = ImageResource(np.full((4, 4), 0.5, dtype=np.float32))


@pytest.fixture(scope="module")
def registered(mlflow_server):
    """``top-cached`` version 1 (score = mean * 6) and where the server stores it."""
    mlflow.set_tracking_uri(mlflow_server.uri)
    mlflow.set_registry_uri(mlflow_server.uri)
    try:
        with mlflow.start_run():
            log_model(ScaledMean(6.0), name="m", registered_model_name="top-cached")
        uri = mlflow.MlflowClient().get_model_version_download_uri("top-cached", "1")
        return "/models/" + uri.split("/models/")[1].split("/")[0] + "/"
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        os.environ.pop("MLFLOW_REGISTRY_URI", None)  # set_registry_uri(None) leaves it


def score(model) -> float:
    return model.predict([IMAGE])[0][0].value


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "datamint_core.cli", *args],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True, text=True, timeout=180,
    )


def test_a_registered_model_is_downloaded_once_then_loads_offline_with_the_server_down(
    tracking_on, registered, tmp_path, monkeypatch
):
    monkeypatch.setenv("DATAMINT_CACHE_DIR", str(tmp_path / "cache"))
    before = tracking_on.artifact_downloads(registered)
    assert score(load_model("models:/top-cached/1")) == 3.0
    after_first = tracking_on.artifact_downloads(registered)
    assert score(load_model("models:/top-cached/1")) == 3.0

    assert after_first > before
    assert tracking_on.artifact_downloads(registered) == after_first, "downloaded again"
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"resources": [IMAGE.to_dict()]}))

    tracking_on.stop()
    try:
        with pytest.raises(TrackingServerUnreachableError, match="Cannot reach the tracking "
                           "server at .* for the model .*DATAMINT_OFFLINE=true"):
            load_model("models:/top-cached/1")
        monkeypatch.setenv("DATAMINT_OFFLINE", "true")
        assert score(load_model("models:/top-cached/1")) == 3.0
        predicted = cli("predict", "-m", "models:/top-cached/1", "-i", str(request),
                        env={"DATAMINT_OFFLINE": "true"})
        assert predicted.returncode == 0, predicted.stderr[-3000:]
        assert json.loads(predicted.stdout)["predictions"][0][0]["value"] == 3.0
        missing = cli("predict", "-m", "models:/top-cached/7", "-i", str(request),
                      env={"DATAMINT_OFFLINE": "true"})
        assert missing.returncode == 1
        assert "Model (models:/top-cached/7) is not in the artifact cache" in missing.stderr
    finally:
        tracking_on.start()


def test_serve_with_two_workers_downloads_the_model_once(tracking_on, registered, tmp_path):
    before = tracking_on.artifact_requests(registered)
    server = datamint_serve(
        "models:/top-cached/1", tmp_path / "serve.log", "--workers", "2",
        DATAMINT_CACHE_DIR=str(tmp_path / "cache"), MLFLOW_TRACKING_URI=tracking_on.uri,
    )
    try:
        server.wait_ready(timeout=120)
        status, answer = call(server.url + "/invocations", {"resources": [IMAGE.to_dict()]})
    finally:
        server.stop()

    assert status == 200 and answer["predictions"][0][0]["value"] == 3.0
    files = tracking_on.artifact_requests(registered)[len(before):]
    assert files, "nothing was downloaded"
    assert len(files) == len(set(files)), f"some files were downloaded twice: {sorted(files)}"
