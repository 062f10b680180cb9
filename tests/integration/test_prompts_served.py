"""Prompts on the wire: ``datamint serve``, ``mlflow models serve``, ``datamint predict
--prompts`` and a ``datamint batch`` prompts column, with the example region grower."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from datamint_core import ImageResource, load_model, save_model
from tests.core.test_prompts import EXAMPLE, blob_image, hostile_prompts
from tests.integration._server import Server, call, datamint_serve, free_port, server_env

CLICK = {"labels": {"lesion": {"points": [{"at": [6, 6]}]}}}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("interactive") / "grower"
    save_model(python_model=str(EXAMPLE), path=path)
    return path


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory):
    server = datamint_serve(model_path, tmp_path_factory.mktemp("log") / "serve.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def image_record() -> dict:
    return ImageResource(blob_image(), id="blobs").to_dict()


def test_metadata_says_the_model_is_interactive_and_which_prompts_each_mode_takes(server):
    status, metadata = call(server.url + "/metadata", method="GET")
    assert status == 200
    assert metadata["interactive"] is True and metadata["prompt_labels"] == ["lesion"]
    for mode in ("image", "slice", "volume"):
        assert metadata["mode_params"][mode]["prompts"] == ["points", "boxes", "scribbles"]


def test_a_click_through_datamint_serve_gives_the_in_process_mask(server, model_path):
    params = {"mode": "image", "prompts": CLICK}
    expected = load_model(str(model_path)).predict([image_record()], params)
    status, answer = call(
        server.url + "/invocations", {"resources": [image_record()], "params": params}
    )
    assert status == 200, answer
    assert answer["predictions"] == [[a.to_dict() for a in expected[0]]]
    assert len(answer["predictions"][0]) == 1


@given(hostile_prompts)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_hostile_prompts_get_a_422_naming_what_is_accepted_never_a_500(server, data):
    status, answer = call(
        server.url + "/invocations",
        {"resources": [image_record()], "params": {"mode": "image", "prompts": data}},
    )
    assert status in (200, 422), answer
    if status == 422:
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "accepted" in answer["message"] or "valid JSON" in answer["message"]


def peak_memory_mb(server: Server) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return (
        int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
        / 1024
    )


def test_a_million_points_are_refused_with_a_4xx_and_the_server_stays_small(server):
    before = peak_memory_mb(server)
    points = {"labels": {"lesion": {"points": [{"at": [1, 1]}] * 1_000_000}}}
    status, answer = call(
        server.url + "/invocations",
        {"resources": [image_record()], "params": {"mode": "image", "prompts": points}},
    )
    # A JSON body of four million values is over the server's JSON value budget: 413.
    assert status == 413, answer
    for prompts in (
        {"labels": {"lesion": {"points": [{"at": [1, 1]}] * 5000}}},
        json.dumps({"labels": {"lesion": {"points": [{"at": [1, 1]}] * 5000}}}),
    ):
        status, answer = call(
            server.url + "/invocations",
            {"resources": [image_record()], "params": {"mode": "image", "prompts": prompts}},
        )
        assert status == 422 and "accepted: at most 4096" in answer["message"], answer
    status, _ = call(server.url + "/ping", method="GET")
    assert status == 200
    assert peak_memory_mb(server) - before < 200


def test_prompts_travel_as_a_json_string_param_through_mlflow_models_serve(model_path, tmp_path):
    mlflow = Path(sys.executable).with_name("mlflow")
    port = free_port()
    command = [
        str(mlflow),
        "models",
        "serve",
        "-m",
        str(model_path),
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = Server(command, port, tmp_path / "mlflow.log")
    try:
        server.wait_ready(timeout=120)
        good = call(
            server.url + "/invocations",
            {"inputs": [image_record()], "params": {"mode": "image", "prompts": json.dumps(CLICK)}},
        )
        bad = call(
            server.url + "/invocations",
            {
                "inputs": [image_record()],
                "params": {
                    "mode": "image",
                    "prompts": json.dumps({"labels": {"lesion": {"points": [{"at": [99, 6]}]}}}),
                },
            },
        )
    finally:
        server.stop()
    assert good[0] == 200, server.log()
    assert good[1]["predictions"][0][0]["identifier"] == "lesion"
    assert bad[0] == 400 and "lies outside the grid [32, 32]" in json.dumps(bad[1]), bad


def test_datamint_predict_takes_a_prompts_file(model_path, tmp_path):
    np.save(tmp_path / "blobs.npy", blob_image())
    (tmp_path / "click.json").write_text(json.dumps(CLICK))
    command = [
        sys.executable,
        "-m",
        "datamint_core.cli",
        "predict",
        "-m",
        str(model_path),
        "-i",
        str(tmp_path / "blobs.npy"),
        "-o",
        str(tmp_path / "out.json"),
        "--mode",
        "image",
        "--prompts",
        str(tmp_path / "click.json"),
    ]
    done = subprocess.run(command, env=server_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (annotations,) = json.loads((tmp_path / "out.json").read_text())["predictions"]
    assert [a["identifier"] for a in annotations] == ["lesion"]


def test_a_batch_prompts_column_gives_each_row_its_own_prompts(model_path, tmp_path):
    from datamint_core.batch import run_batch

    np.save(tmp_path / "blobs.npy", blob_image())
    manifest = tmp_path / "rows.jsonl"
    rows = [
        {"id": "upper", "path": "blobs.npy", "prompts": CLICK},
        {
            "id": "lower",
            "path": "blobs.npy",
            "prompts": {"labels": {"lesion": {"points": [{"at": [22, 22]}]}}},
        },
        {
            "id": "outside",
            "path": "blobs.npy",
            "prompts": {"labels": {"lesion": {"points": [{"at": [99, 1]}]}}},
        },
    ]
    manifest.write_text("\n".join(json.dumps(row) for row in rows))
    run_batch(
        str(model_path),
        str(manifest),
        str(tmp_path / "out"),
        params={"mode": "image"},
        engine="local",
        workers=1,
    )
    import pyarrow.parquet as pq

    table = {row["id"]: row for row in pq.read_table(tmp_path / "out").to_pylist()}
    assert table["upper"]["status"] == table["lower"]["status"] == "ok"
    assert table["outside"]["status"] == "failed"
    assert "lies outside the grid" in table["outside"]["error"]
