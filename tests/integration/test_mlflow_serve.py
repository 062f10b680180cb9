"""A Datamint model also serves through ``mlflow models serve --env-manager local``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from datamint_core import VolumeResource, load_model, save_model
from tests.core.sample_models import ThresholdSegmenter, phantom_volume
from tests.integration._server import Server, call, free_port


def test_mlflow_models_serve_answers_records_split_and_inputs_with_params_with_our_masks(tmp_path):
    mlflow_command = Path(sys.executable).with_name("mlflow")
    if not mlflow_command.exists() and shutil.which("mlflow") is None:
        pytest.fail("the mlflow command is not installed next to this Python")
    model_path = tmp_path / "segmenter"
    save_model(ThresholdSegmenter(), model_path)
    volume = VolumeResource(phantom_volume(), id="ct-1", spacing=(2.5, 0.8, 0.8))
    params = {"mode": "slice", "slice_index": 6}
    expected = [
        [a.to_dict() for a in entry]
        for entry in load_model(str(model_path)).predict([volume], params)
    ]
    port = free_port()
    command = [str(mlflow_command), "models", "serve", "-m", str(model_path)]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    server = Server(command, port, tmp_path / "mlflow-serve.log")
    try:
        server.wait_ready(timeout=120)
        records = call(
            server.url + "/invocations",
            {"dataframe_records": [volume.to_dict()], "params": params},
        )
        columns = list(volume.to_dict())
        split = call(
            server.url + "/invocations",
            {
                "dataframe_split": {"columns": columns, "data": [list(volume.to_dict().values())]},
                "params": params,
            },
        )
        inputs = call(server.url + "/invocations", {"inputs": [volume.to_dict()], "params": params})
    finally:
        server.stop()

    assert records == (200, {"predictions": expected}), server.log()
    assert split == (200, {"predictions": expected})
    assert inputs == (200, {"predictions": expected}), server.log()
    assert expected[0][0]["slice_index"] == 6
