"""Lightning's MLFlowLogger() logs where MLflow points, whatever was imported first.

Each case is a fresh process: the bug lives in what Lightning freezes at import time. The
Datamint platform's store is the subject of the same test in
tests/integration/test_training_platform.py (it needs the platform stand-in).
"""

from __future__ import annotations

import itertools
import json
import os

import pytest

IMPORTS = {
    "lightning": "from lightning.pytorch.loggers import MLFlowLogger",
    "core": "import datamint_core",
    "extra": "import datamint_lightning",
}

SCRIPT = """
import json, os
{imports}
from lightning.pytorch.loggers import MLFlowLogger
import mlflow
{before_logger}
logger = MLFlowLogger(experiment_name="import-order")
logger.log_metrics({{"loss": 0.5}}, step=1)
logger.finalize("success")
run = mlflow.MlflowClient(mlflow.get_tracking_uri()).get_run(logger.run_id)
print(json.dumps({{"logger": logger._tracking_uri, "mlflow": mlflow.get_tracking_uri(),
                  "metrics": run.data.metrics, "mlruns": os.path.exists("mlruns")}}))
"""


def _run(run_python, order, before_logger="", env=None):
    imports = "\n".join(IMPORTS[name] for name in order)
    out = run_python(SCRIPT.format(imports=imports, before_logger=before_logger), env=env)
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("order", list(itertools.permutations(IMPORTS)),
                         ids=lambda order: "-".join(order))
def test_the_logger_follows_mlflow_set_tracking_uri_in_every_import_order(
    run_python, tmp_path, order
):
    uri = f"sqlite:///{tmp_path / 'chosen.db'}"
    found = _run(run_python, order, before_logger=f"mlflow.set_tracking_uri({uri!r})",
                 env={"MLFLOW_TRACKING_URI": ""})
    assert found["logger"] == found["mlflow"] == uri
    assert found["metrics"] == {"loss": 0.5}
    assert found["mlruns"] is False


@pytest.mark.parametrize("order", [("lightning", "extra"), ("extra", "lightning")],
                         ids=["lightning-first", "datamint-first"])
def test_without_any_tracking_uri_the_logger_uses_the_embedded_sqlite_default_not_mlruns(
    run_python, tmp_path, order
):
    env = {k: "" for k in os.environ if k.startswith("MLFLOW_")}
    found = _run(run_python, order, env=env)
    assert found["logger"] == found["mlflow"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert found["metrics"] == {"loss": 0.5}
    assert found["mlruns"] is False


def test_an_environment_uri_set_after_lightning_was_imported_is_followed(run_python, tmp_path):
    uri = f"sqlite:///{tmp_path / 'late.db'}"
    found = _run(run_python, ("lightning", "extra"),
                 before_logger=f"os.environ['MLFLOW_TRACKING_URI'] = {uri!r}",
                 env={"MLFLOW_TRACKING_URI": ""})
    assert found["logger"] == found["mlflow"] == uri


def test_explicit_arguments_are_kept(run_python, tmp_path):
    code = f"""
        import json
        import datamint_lightning
        from lightning.pytorch.loggers import MLFlowLogger
        given = MLFlowLogger("x", None, "sqlite:///{tmp_path / 'given.db'}")
        files = MLFlowLogger(save_dir="{tmp_path / 'store'}")
        print(json.dumps([given._tracking_uri, files._tracking_uri]))
    """
    # A save_dir asks for MLflow's file store on purpose (which MLflow 3 allows only so).
    # No tracking URI in the environment: Lightning's own default would take it over save_dir.
    out = run_python(code, env={"MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_TRACKING_URI": ""})
    given, files = json.loads(out.strip().splitlines()[-1])
    assert given == f"sqlite:///{tmp_path / 'given.db'}"
    assert files == f"file:{tmp_path / 'store'}"
