"""``datamint_core._mlflow_internals`` against the installed MLflow: real ``save_model``, a real
SQLite store, real sockets, no mocks.

Each test pins what datamint takes from one of MLflow's private functions or behaviours, so a
release that changes it fails here (``scripts/compat`` runs these against the newest
MLflow), not in a user's load: where ``save_model`` puts a ``PythonModel``'s files and how
they load back, how a model file is run with its config, the Python-version warning, the
code-path and config overrides of ``load_model``, a client's tracking store, a dataset as
a run input, and the network error an unreachable server leaves in the exception chain.
"""

from __future__ import annotations

import importlib
import json
import logging
import platform
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow
import numpy as np
import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from datamint_core import _mlflow_internals
from tests.integration.mlflow_server import free_port


class Doubler(PythonModel):
    """A pickled model whose ``load_context`` leaves a mark."""

    def load_context(self, context: Any) -> None:
        self.context_loaded = True

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        return model_input * 2


MODEL_FILE = """
import mlflow
from mlflow.models import ModelConfig, set_model
from mlflow.pyfunc import PythonModel


class Scaled(PythonModel):
    def __init__(self, factor):
        self.factor = factor

    def predict(self, context, model_input, params=None):
        return model_input * self.factor


set_model(Scaled(ModelConfig(development_config={"factor": 1}).get("factor")))
"""


def pyfunc_block(model_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["python_function"]


@pytest.fixture
def restored_sys_path(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(sys, "path", list(sys.path))
    return sys.path


@pytest.mark.parametrize("compression", [None, "lzma", "bzip2"])
def test_a_pickled_python_model_is_found_and_unpickled_where_save_model_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str | None
):
    if compression is not None:
        monkeypatch.setenv("MLFLOW_LOG_MODEL_COMPRESSION", compression)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x00\x01weights")
    model_dir = tmp_path / "model"
    mlflow.pyfunc.save_model(
        model_dir, python_model=Doubler(), artifacts={"weights": str(weights)}
    )

    files = _mlflow_internals.python_model_files(str(model_dir), pyfunc_block(model_dir))

    assert files.code_file is None
    assert files.compression == compression
    assert files.cloudpickle_version == cloudpickle.__version__
    assert Path(files.artifacts["weights"]).read_bytes() == b"\x00\x01weights"
    assert Path(files.artifacts["weights"]).is_relative_to(model_dir)
    model = _mlflow_internals.unpickle_python_model(files.pickle_file, files.compression)
    assert isinstance(model, Doubler)
    assert not hasattr(model, "context_loaded")  # unpickled only: load_context is ours to call
    assert model.predict(None, np.array([1.5])).tolist() == [3.0]


def test_a_model_saved_from_code_names_its_file_and_runs_with_the_given_config(tmp_path: Path):
    code = tmp_path / "scaled.py"
    code.write_text(MODEL_FILE)
    model_dir = tmp_path / "model"
    mlflow.pyfunc.save_model(model_dir, python_model=str(code), model_config={"factor": 3})

    files = _mlflow_internals.python_model_files(str(model_dir), pyfunc_block(model_dir))

    assert files.pickle_file is None
    assert Path(files.code_file).parent == model_dir
    assert Path(files.code_file).read_text() == MODEL_FILE
    model = _mlflow_internals.load_model_from_code(files.code_file, {"factor": 7})
    assert type(model).__name__ == "Scaled"
    assert model.factor == 7  # the config given, not the development one nor the saved one


def test_a_model_file_that_fails_is_an_mlflow_exception_naming_the_file(tmp_path: Path):
    code = tmp_path / "broken.py"
    code.write_text("raise RuntimeError('no weights here')\n")
    with pytest.raises(MlflowException) as raised:
        _mlflow_internals.load_model_from_code(str(code), None)
    assert str(code) in raised.value.message
    assert "no weights here" in raised.value.message


def test_a_model_saved_with_another_python_is_only_warned_about(
    caplog: pytest.LogCaptureFixture,
):
    with caplog.at_level(logging.WARNING):
        _mlflow_internals.warn_if_python_version_differs(platform.python_version())
    assert caplog.records == []
    with caplog.at_level(logging.WARNING):
        _mlflow_internals.warn_if_python_version_differs("2.7.18")
    assert len(caplog.records) == 1
    assert "2.7.18" in caplog.records[0].getMessage()
    assert caplog.records[0].levelno == logging.WARNING


def test_the_code_paths_of_a_model_go_first_on_sys_path(
    tmp_path: Path, restored_sys_path: list[str], monkeypatch: pytest.MonkeyPatch
):
    helper = tmp_path / "datamint_compat_helper.py"
    helper.write_text("ANSWER = 42\n")
    with_code = tmp_path / "with-code"
    mlflow.pyfunc.save_model(with_code, python_model=Doubler(), code_paths=[str(helper)])
    monkeypatch.delitem(sys.modules, "datamint_compat_helper", raising=False)
    without = tmp_path / "without"
    mlflow.pyfunc.save_model(without, python_model=Doubler())

    before = list(sys.path)
    _mlflow_internals.add_code_paths_to_sys_path(str(without), pyfunc_block(without))
    assert sys.path == before

    _mlflow_internals.add_code_paths_to_sys_path(str(with_code), pyfunc_block(with_code))
    assert sys.path[1:] == before
    assert Path(sys.path[0]).is_relative_to(with_code)
    assert importlib.import_module("datamint_compat_helper").ANSWER == 42
    assert Path(sys.modules["datamint_compat_helper"].__file__).is_relative_to(with_code)


def test_a_load_overrides_only_the_config_keys_the_model_was_saved_with(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    saved = {"device": None, "tile": 64}
    monkeypatch.delenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", raising=False)

    assert _mlflow_internals.overridden_model_config(saved, None) == saved
    with caplog.at_level(logging.WARNING):
        config = _mlflow_internals.overridden_model_config(saved, {"device": "cpu", "bogus": 1})
    assert config == {"device": "cpu", "tile": 64}
    assert "bogus" in caplog.text

    monkeypatch.setenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", json.dumps({"tile": 32, "device": "a"}))
    config = _mlflow_internals.overridden_model_config(saved, {"device": "cuda:1"})
    assert config == {"device": "cuda:1", "tile": 32}  # the argument beats the variable


def test_a_clients_tracking_store_is_the_store_of_its_tracking_uri(sqlite_tracking_uri: str):
    client = mlflow.MlflowClient(sqlite_tracking_uri)
    store = _mlflow_internals.tracking_store(client)

    experiment_id = store.create_experiment("made-through-the-store")
    assert client.get_experiment_by_name("made-through-the-store").experiment_id == experiment_id
    assert store.get_experiment_by_name("made-through-the-store").experiment_id == experiment_id


def test_a_dataset_input_logs_as_mlflow_log_input_does(sqlite_tracking_uri: str):
    from mlflow.data.numpy_dataset import from_numpy

    dataset = from_numpy(np.arange(6, dtype=np.float32).reshape(3, 2), name="scans")
    client = mlflow.MlflowClient()
    with mlflow.start_run() as reference:
        mlflow.log_input(dataset, context="training")
    ours = client.create_run(reference.info.experiment_id).info.run_id

    client.log_inputs(ours, datasets=[_mlflow_internals.dataset_input(dataset, "training")])

    def logged(run_id: str) -> list[tuple]:
        return [
            (
                found.dataset.name,
                found.dataset.digest,
                found.dataset.source_type,
                found.dataset.source,
                found.dataset.schema,
                sorted((tag.key, tag.value) for tag in found.tags),
            )
            for found in client.get_run(run_id).inputs.dataset_inputs
        ]

    assert logged(ours) == logged(reference.info.run_id)
    assert logged(ours)[0][0] == "scans"
    assert ("mlflow.data.context", "training") in logged(ours)[0][5]


def test_mlflow_scoring_server_says_so_in_its_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pytest.importorskip("fastapi", reason="MLflow's scoring server needs fastapi")
    from mlflow.pyfunc import scoring_server

    monkeypatch.delenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", raising=False)  # restored after
    mlflow.pyfunc.save_model(tmp_path / "model", python_model=Doubler())
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    assert _mlflow_internals.in_mlflow_scoring_server() is False

    scoring_server.init(model)  # what `mlflow models serve` builds its app with

    assert _mlflow_internals.in_mlflow_scoring_server() is True


def test_the_datamint_model_predict_is_not_wrapped_by_mlflow_type_hint_validation():
    # datamint_core.model sets PythonModel's private class attribute
    # _skip_type_hint_validation (the domain model cannot import this adapter, and the flag
    # must be there when the class is created): MLflow then leaves predict unwrapped, so
    # that resources are not validated twice per call. The control shows the wrap it skips.
    from datamint_core.model import BaseDatamintModel

    class Control(PythonModel):
        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return model_input

    assert hasattr(Control.predict, "__wrapped__")
    assert not hasattr(BaseDatamintModel.predict, "__wrapped__")
    assert BaseDatamintModel.predict.__module__ == "datamint_core.model"


@pytest.fixture
def fast_failing_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A socket that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        accepted: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            server.settimeout(0.2)
            while not stop.is_set():
                try:
                    accepted.append(server.accept()[0])
                except OSError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()


def test_a_server_nobody_listens_on_is_told_apart_by_type(fast_failing_http: None):
    client = mlflow.MlflowClient(
        tracking_uri=f"http://127.0.0.1:{free_port()}",
        registry_uri=f"http://127.0.0.1:{free_port()}",
    )
    with pytest.raises(MlflowException) as raised:
        client.get_registered_model("anything")
    assert _mlflow_internals.is_unreachable_server_error(raised.value)


def test_a_server_that_never_answers_is_told_apart_by_type(
    fast_failing_http: None, silent_server: str
):
    client = mlflow.MlflowClient(tracking_uri=silent_server, registry_uri=silent_server)
    with pytest.raises(MlflowException) as raised:
        client.get_model_version("anything", "1")
    assert _mlflow_internals.is_unreachable_server_error(raised.value)


def test_an_answer_from_the_store_is_not_an_unreachable_server(sqlite_tracking_uri: str):
    client = mlflow.MlflowClient()
    with pytest.raises(MlflowException) as raised:
        client.get_registered_model("not-registered")
    assert raised.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert not _mlflow_internals.is_unreachable_server_error(raised.value)
    # A message that merely mentions a refused connection is still not one.
    quoted = MlflowException("Connection refused by the model: Max retries exceeded")
    assert not _mlflow_internals.is_unreachable_server_error(quoted)


@pytest.fixture
def answering_server() -> Iterator[tuple[str, list[tuple[int, str, bytes]]]]:
    """An HTTP server answering each request with the next ``(status, type, body)`` queued."""
    import http.server

    answers: list[tuple[int, str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, body = answers.pop(0)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        (401, "text/html", b"<html><body>401 Authorization Required</body></html>"),
        (403, "text/html", b"<html><body>403 Forbidden</body></html>"),
        (401, "application/json", b'{"error_code": "UNAUTHENTICATED", "message": "bad key"}'),
        (403, "application/json", b'{"error_code": "PERMISSION_DENIED", "message": "no"}'),
        (500, "text/plain", b"upstream failed"),
    ],
    ids=["401-html", "403-html", "401-json", "403-json", "500-text"],
)
def test_the_http_status_of_a_refused_request_survives_in_the_exception(
    fast_failing_http: None, answering_server, status: int, content_type: str, body: bytes
):
    url, answers = answering_server
    answers.append((status, content_type, body))
    client = mlflow.MlflowClient(tracking_uri=url)
    with pytest.raises(MlflowException) as raised:
        client.get_experiment("1")
    assert _mlflow_internals.http_status_of(raised.value) == status
    if status < 500:  # a 5xx may be retried (urllib3's Retry): retries exhausted, unreachable
        assert not _mlflow_internals.is_unreachable_server_error(raised.value)
    assert _mlflow_internals.http_status_of(ValueError("not MLflow's")) == 500


def test_the_adapter_is_the_only_product_module_naming_mlflow_private_functions():
    import ast

    import datamint_core

    roots = [Path(datamint_core.__file__).parent]
    roots += [roots[0].parent / "datamint_torch", roots[0].parent / "datamint_lightning"]
    offenders = []
    for root in roots:
        for path in root.rglob("*.py"):
            if path.name == "_mlflow_internals.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    offenders += [
                        f"{path.name}: import {alias.name}"
                        for alias in node.names
                        if alias.name.startswith("mlflow") and "._" in alias.name
                    ]
                elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlflow"):
                    private = [a.name for a in node.names if a.name.startswith("_")]
                    if private or "._" in node.module:
                        offenders.append(f"{path.name}: from {node.module} import {private}")
                elif (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and node.value.startswith("_MLFLOW_")
                ):
                    offenders.append(f"{path.name}: MLflow's private variable {node.value}")
                elif isinstance(node, ast.Attribute) and node.attr in (
                    "_tracking_client",
                    "_to_mlflow_entity",
                ):
                    offenders.append(f"{path.name}: .{node.attr}")
    assert offenders == [], (
        "MLflow's private internals belong in datamint_core/_mlflow_internals.py, each with a "
        f"test in {Path(__file__).name}: {offenders}"
    )
