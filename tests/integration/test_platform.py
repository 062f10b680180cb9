"""The Datamint platform through MLflow's plugins, against a real ``mlflow server``.

The server sits behind :class:`PlatformStandIn`'s gateway, which lets a request through only
with the API key and counts every request; the stand-in's project API follows the public
SDK's contract. Each scenario runs in a fresh process whose environment holds only the
Datamint settings (no MLFLOW_* variable), as a user's would.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from tests.integration.mlflow_server import MlflowServer, free_port
from tests.integration.platform_standin import PlatformStandIn

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = {"id": "3f1c2a9e-6b7d-4e21-9a55-0c2b8f4d1e77", "name": "Liver CT"}
OTHER_PROJECT = {"id": "8a2d0b61-1f3e-4c8a-b0d2-5e6f7a8b9c0d", "name": "Lung X-ray"}


@pytest.fixture(scope="module")
def platform(mlflow_server: MlflowServer) -> Iterator[PlatformStandIn]:
    standin = PlatformStandIn("dm-" + secrets.token_hex(20), mlflow_server.uri,
                              [PROJECT, OTHER_PROJECT]).start()
    yield standin
    standin.stop()


def datamint_env(platform: PlatformStandIn, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """Only the Datamint settings (and what Python needs): no MLFLOW_* variable at all."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO_ROOT),
        "DATAMINT_CONFIG_FILE": str(tmp_path / "no-config.json"),
        "DATAMINT_API_KEY": platform.api_key,
        "DATAMINT_API_URL": platform.api_url,
        "DATAMINT_MLFLOW_URL": platform.mlflow_url,
        "DATAMINT_PROJECT_NAME": PROJECT["name"],
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    env.update(overrides)
    return {key: value for key, value in env.items() if value}


def run_fresh(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=240)


LOG_AND_REGISTER = """
    import json, mlflow, numpy as np
    import datamint_core
    from datamint_core import BaseDatamintModel, CategoryAnnotation, ImageResource, log_model

    class Classifier(BaseDatamintModel):
        def predict_image(self, model_input):
            return [[CategoryAnnotation("finding", "none", confidence=0.9)] for _ in model_input]

    with mlflow.start_run() as run:
        mlflow.log_param("epochs", 3)
        log_model(Classifier(), name="classifier", registered_model_name="liver-classifier")
    loaded = mlflow.pyfunc.load_model("models:/liver-classifier/1")
    image = ImageResource(np.zeros((8, 8)), id="resource-1")
    predictions = loaded.predict([image.to_dict()],
                                 params={"model_name": "liver-classifier",
                                         "log_predictions": True})
    print(json.dumps({"tracking_uri": mlflow.get_tracking_uri(),
                      "experiment_id": run.info.experiment_id, "run_id": run.info.run_id,
                      "predictions": predictions}))
"""


def test_a_fresh_process_with_only_datamint_settings_logs_and_registers_into_the_project(
    platform, mlflow_server, tmp_path
):
    platform.reset()
    completed = run_fresh(LOG_AND_REGISTER, datamint_env(platform, tmp_path), tmp_path)
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])

    assert result["tracking_uri"] == f"datamint://{platform.mlflow_url.split('//')[1]}"
    # Straight at the server, behind the gateway's back: where did everything land?
    client = mlflow.MlflowClient(mlflow_server.uri, registry_uri=mlflow_server.uri)
    experiment = client.get_experiment(result["experiment_id"])
    assert experiment.name == PROJECT["name"]
    assert experiment.tags["datamint.project_id"] == PROJECT["id"]
    assert client.get_run(result["run_id"]).data.params == {"epochs": "3"}
    version = client.get_model_version("liver-classifier", "1")
    assert version.run_id == result["run_id"]
    assert ("create", PROJECT["id"]) in platform.project_ids_sent

    # The key went with every request, and only the key opened the gateway.
    assert platform.requests[("mlflow", "without_key")] == 0
    assert platform.requests[("api", "without_key")] == 0
    assert platform.requests[("mlflow", "with_key")] >= 10
    # log_predictions=True sent the annotations to the platform, under the project.
    assert result["predictions"] == [[{"type": "category", "identifier": "finding",
                                       "scope": "image", "confidence": 0.9, "value": "none"}]]
    assert platform.annotations_received == [{
        "resource_id": "resource-1", "model_name": "liver-classifier",
        "project_id": PROJECT["id"], "annotations": result["predictions"][0],
    }]

    # ... and nowhere in what the server stored: its database and its artifacts.
    secret = platform.api_key.encode()
    stored = [mlflow_server.root / "mlflow.db", *(mlflow_server.root / "artifacts").rglob("*")]
    leaks = [str(p) for p in stored if p.is_file() and secret in p.read_bytes()]
    assert stored and leaks == []


def test_without_datamint_settings_importing_changes_nothing_about_mlflow(tmp_path):
    probe = """
        import json, os, sys
        {imports}
        import mlflow
        from mlflow.tracking.default_experiment.registry import get_experiment_id
        print(json.dumps({{"uri": mlflow.get_tracking_uri(),
                          "registry": mlflow.get_registry_uri(),
                          "experiment": get_experiment_id(),
                          "env": sorted(k for k in os.environ if k.startswith("MLFLOW_"))}}))
    """
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(REPO_ROOT),
           "DATAMINT_CONFIG_FILE": str(tmp_path / "no-config.json")}
    outputs = []
    for imports in ("", "import datamint_core"):
        completed = run_fresh(probe.format(imports=imports), env, tmp_path)
        assert completed.returncode == 0, completed.stderr[-3000:]
        outputs.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    assert outputs[0] == outputs[1]
    assert outputs[1]["env"] == [] and not outputs[1]["uri"].startswith("datamint")


def test_an_explicit_tracking_uri_is_never_replaced(platform, tmp_path):
    completed = run_fresh(
        "import datamint_core, mlflow; print(mlflow.get_tracking_uri())",
        datamint_env(platform, tmp_path, MLFLOW_TRACKING_URI="sqlite:///mine.db"), tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == "sqlite:///mine.db"


START_RUN = """
    import time, datamint_core, mlflow
    started = time.monotonic()
    try:
        mlflow.start_run()
    except Exception as error:
        print(f"{type(error).__name__}: {error}")
    print(f"after {time.monotonic() - started:.1f} s")
"""


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"DATAMINT_API_KEY": "dm-wrong-key"},
         "PlatformAuthError: .* rejected the API key \\(HTTP 401\\)\\. Check DATAMINT_API_KEY"),
        ({"DATAMINT_MLFLOW_URL": "http://127.0.0.1:{closed}"},
         "PlatformUnreachableError: Cannot reach the Datamint MLflow server at "
         "http://127.0.0.1:{closed} .*Check DATAMINT_MLFLOW_URL"),
        ({"DATAMINT_API_URL": "http://127.0.0.1:{closed}"},
         "PlatformUnreachableError: Cannot reach the Datamint platform at "
         "http://127.0.0.1:{closed} .*Check DATAMINT_API_URL"),
        ({"DATAMINT_PROJECT_NAME": "No such project"},
         "ProjectNotFoundError: No Datamint project named or with id 'No such project' .*"
         "can see: 'Liver CT', 'Lung X-ray'"),
        ({"DATAMINT_API_URL": "http://platform.example.org", "DATAMINT_MLFLOW_URL": ""},
         "PlatformConfigError: DATAMINT_API_URL='http://platform.example.org' uses plain HTTP "
         "to platform.example.org, which would send the API key in clear text; use https://"),
    ],
    ids=["wrong-key", "unreachable-mlflow", "unreachable-api", "unknown-project", "plain-http"],
)
def test_each_platform_problem_is_a_clear_error_within_seconds(platform, tmp_path, overrides,
                                                               expected):
    import re

    closed = str(free_port())
    overrides = {key: value.format(closed=closed) for key, value in overrides.items()}
    started = time.monotonic()
    completed = run_fresh(START_RUN, datamint_env(platform, tmp_path, **overrides), tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    first, after = completed.stdout.strip().splitlines()[-2:]
    assert re.search(expected.format(closed=closed), first), first
    assert float(after.split()[1]) < 5, after  # no stack of retries
    assert time.monotonic() - started < 60
    assert overrides.get("DATAMINT_API_KEY", platform.api_key) not in completed.stdout


STORE_CALL = """
    from datamint_core.platform.config import load_settings
    from datamint_core.platform.store import DatamintStore

    store = DatamintStore(load_settings().tracking_uri, force_valid=False)  # no probe first
    try:
        store.search_experiments()
    except Exception as error:
        print(f"{type(error).__name__}: {error}")
"""


def test_a_key_refused_on_a_store_call_is_a_platform_auth_error_by_its_status(platform,
                                                                              tmp_path):
    # The refusal is told apart by the HTTP status MLflow's REST client keeps in its
    # exception (datamint_core._mlflow_internals.http_status_of), not by its message.
    env = datamint_env(platform, tmp_path, DATAMINT_API_KEY="dm-wrong-key")
    completed = run_fresh(STORE_CALL, env, tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.startswith("PlatformAuthError: "), completed.stdout
    assert "rejected the API key (HTTP 401)" in completed.stdout
    assert "dm-wrong-key" not in completed.stdout
