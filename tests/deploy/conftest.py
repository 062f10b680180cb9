"""Fixtures for the deployability suite: fresh environments built by MLflow's env managers.

These tests run ``mlflow models predict --env-manager uv`` on saved models: uv builds a
new virtual environment from nothing but the model directory (its ``requirements.txt`` and
bundled wheel) and the package index, then MLflow predicts in it. They run in the full
environment (``scripts/test``), take about a minute with a warm uv cache, and never let uv
pick a torch build other than the CPU wheel pip is configured to find.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _pip_find_links() -> list[str]:
    """The ``find-links`` pip is configured with (uv does not read pip's configuration)."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    links = [os.environ.get("PIP_FIND_LINKS", "")]
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            links.append(value.strip().strip("'\""))
    return [link for entry in links for link in entry.split() if link]


@pytest.fixture
def predict_in_fresh_env(tmp_path: Path) -> Callable[..., list]:
    """Run ``mlflow models predict --env-manager uv`` and return the predictions.

    The environment is created under ``tmp_path`` (nothing reused but uv's download cache).
    ``constraints`` go to uv as ``UV_CONSTRAINT``.
    """
    if shutil.which("uv", path=str(BIN)) is None:
        pytest.fail("uv is missing from the test environment: install datamint[test]")

    def predict(model_dir: Path, request: dict, constraints: list[str] = ()) -> list:
        request_file = tmp_path / "request.json"
        request_file.write_text(json.dumps(request))
        env = {
            **os.environ,
            "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
            "MLFLOW_ENV_ROOT": str(tmp_path / "envs"),
            "UV_FIND_LINKS": ",".join(dict.fromkeys(_pip_find_links())),
            "PYTHONPATH": "",  # the fresh environment sees only what it installed
        }
        if constraints:
            constraint_file = tmp_path / "constraints.txt"
            constraint_file.write_text("\n".join(constraints) + "\n")
            env["UV_CONSTRAINT"] = str(constraint_file)
        completed = subprocess.run(
            [str(BIN / "mlflow"), "models", "predict", "-m", str(model_dir),
             "-i", str(request_file), "-t", "json", "--env-manager", "uv"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=420,
        )
        assert completed.returncode == 0, completed.stderr[-6000:]
        installed = [line for line in completed.stderr.splitlines() if line.startswith(" + ")]
        predict.installed = installed
        return json.loads(completed.stdout.strip().splitlines()[-1])["predictions"]

    return predict
