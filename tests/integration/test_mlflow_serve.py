"""A Datamint model also serves through ``mlflow models serve --env-manager local``, and its
errors there are as clear as through ``datamint serve``: the library's message, no trace."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from datamint_core import ImageResource, VolumeResource, errors, load_model, save_model
from tests.core.sample_models import ThresholdSegmenter, phantom_volume
from tests.integration._server import Server, call, datamint_serve, free_port
from tests.integration.linked_sample_models import Ensemble, ScaledMean
from tests.integration.serving_models import FragileSegmenter, RaisingSegmenter


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


def _mlflow_models_serve(root: Path, model: object, name: str) -> Iterator[Server]:
    """``mlflow models serve`` of ``model`` saved under ``root / name``, stopped afterwards."""
    save_model(model, root / name)
    mlflow_command = Path(sys.executable).with_name("mlflow")
    port = free_port()
    command = [str(mlflow_command), "models", "serve", "-m", str(root / name)]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    server = Server(command, port, root / "mlflow-serve.log")
    try:
        server.wait_ready(timeout=120)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fragile_mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    yield from _mlflow_models_serve(
        tmp_path_factory.mktemp("mlflow-serve"), FragileSegmenter(), "fragile"
    )


def _volume_record(value: float = 0.5) -> dict:
    return VolumeResource(np.full((3, 8, 8), value), id="ct").to_dict()


@pytest.mark.parametrize(
    ("records", "params", "message"),
    [
        ([_volume_record()], {"mode": "sideways"},
         "Unknown prediction mode 'sideways'; valid values are: 'default'"),
        ([_volume_record()], {"mode": "slice", "slice_index": 1, "axis": "up"},
         "Param 'axis'='up' is not valid; accepted: ['axial', 'coronal', 'sagittal']"),
        ([_volume_record()], {"mode": "slice", "slice_index": 7},
         "slice_index=7 is outside VolumeResource 'ct' (3 axial slices)"),
        ([{"kind": "volume", "path": "/etc/passwd"}], {"mode": "volume"},
         "names the local path '/etc/passwd', which is outside any directory"),
        ([{"kind": "image", "pixel_data": {"encoding": "list", "data": [[1, 2]],
                                           "dtype": "(6000,6000)f8"}}], {},
         "accepted: a plain numeric or boolean dtype"),
    ],
)  # fmt: skip
def test_mlflow_models_serve_answers_input_errors_with_400_and_the_library_message(
    fragile_mlflow_server, records, params, message
):
    status, answer = call(
        fragile_mlflow_server.url + "/invocations",
        {"dataframe_records": records, "params": params},
    )

    assert status == 400, answer
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert message in answer["message"]
    assert "stack_trace" not in answer and "Traceback" not in answer["message"]


def test_mlflow_models_serve_answers_a_model_failure_with_500_without_trace_or_paths(
    fragile_mlflow_server,
):
    status, answer = call(
        fragile_mlflow_server.url + "/invocations",
        {"dataframe_records": [_volume_record(1.0)], "params": {"mode": "volume"}},
    )
    following = call(
        fragile_mlflow_server.url + "/invocations",
        {"dataframe_records": [_volume_record()], "params": {"mode": "volume"}},
    )

    assert status == 500, answer
    assert "The model failed: RuntimeError: cannot open '<path>'" not in answer["message"]
    assert "The model failed: RuntimeError: cannot open <path> for a bright image" in (
        answer["message"]
    )
    assert "/srv/secret" not in json.dumps(answer)
    assert "stack_trace" not in answer
    assert following[0] == 200


def test_datamint_serve_metadata_never_shows_where_a_local_linked_model_lies(tmp_path):
    save_model(ScaledMean(2.0), tmp_path / "child")
    save_model(Ensemble(mlflow_models_uri={"child": str(tmp_path / "child")}), tmp_path / "parent")
    server = datamint_serve(tmp_path / "parent", tmp_path / "serve.log")
    try:
        server.wait_ready()
        status, metadata = call(server.url + "/metadata")
    finally:
        server.stop()

    assert status == 200
    assert str(tmp_path) not in json.dumps(metadata)
    assert metadata["linked_models"]["child"]["uri"] == "(local) child"


@pytest.fixture(scope="module")
def probe_mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    yield from _mlflow_models_serve(
        tmp_path_factory.mktemp("mlflow-serve-probe"), RaisingSegmenter(), "probe"
    )


@pytest.mark.parametrize("error", errors.public_errors(), ids=lambda error: error.__name__)
def test_mlflow_models_serve_answers_every_public_error_by_the_one_mapping(
    probe_mlflow_server, error
):
    # MLflow's error codes have no 413 or 422: the request's fault is its 400, any other 500.
    image = ImageResource(np.full((8, 8), 0.5), id=error.__name__).to_dict()

    status, answer = call(
        probe_mlflow_server.url + "/invocations",
        {"dataframe_records": [image], "params": {"mode": "image"}},
    )

    raised = f"the model raised {error.__name__}"
    if error.http_status < 500:
        assert (status, answer["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), answer
        assert answer["message"] == raised
    elif error is errors.RequestDeadlineExceeded:
        assert (status, answer["error_code"]) == (500, "INTERNAL_ERROR"), answer
        assert "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT" in answer["message"]
    else:
        assert (status, answer["error_code"]) == (500, "INTERNAL_ERROR"), answer
        assert answer["message"] == f"The model failed: {error.__name__}: {raised}"
