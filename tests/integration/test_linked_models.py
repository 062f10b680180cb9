"""Linked models against a real ``mlflow server``: pinning, the cache, offline mode, bundles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from datamint_core import (
    ImageResource,
    LinkedModelError,
    LinkedModelNotFoundError,
    TrackingServerUnreachableError,
    load_model,
    log_model,
    save_model,
)
from datamint_core.artifact_cache import ArtifactCache, model_key, run_key
from datamint_core.linked_models import pin
from tests.integration.linked_sample_models import Ensemble, ScaledMean
from tests.integration.mlflow_server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
PIXELS = np.full((4, 4), 0.5, dtype=np.float32)

PREDICT = """
import json, sys
from datamint_core import ImageResource, load_model
model = load_model(sys.argv[1])
(scores,) = model.predict([ImageResource(__import__("numpy").full((4, 4), 0.5, "float32"))])
print(json.dumps({a.identifier: a.value for a in scores}))
"""


@pytest.fixture(scope="module")
def children(mlflow_server):
    """Two registered children: child-a version 1, child-b version 2 with alias 'prod'."""
    mlflow.set_tracking_uri(mlflow_server.uri)
    mlflow.set_registry_uri(mlflow_server.uri)
    try:
        with mlflow.start_run():
            log_model(ScaledMean(2.0), name="a", registered_model_name="child-a")
            log_model(ScaledMean(3.0), name="b1", registered_model_name="child-b")
            log_model(ScaledMean(4.0), name="b2", registered_model_name="child-b")
        client = mlflow.MlflowClient()
        client.set_registered_model_alias("child-b", "prod", "2")
        return [
            client.get_model_version_download_uri(name, version).split("/models/")[1].split("/")[0]
            for name, version in (("child-a", "1"), ("child-b", "2"))
        ]
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        os.environ.pop("MLFLOW_REGISTRY_URI", None)  # set_registry_uri(None) leaves it


def predict_in_new_process(model_path: Path, env: dict[str, str], cwd: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", PREDICT, str(model_path)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def child_downloads(server, fragments) -> int:
    return sum(server.artifact_downloads(f"/models/{fragment}/") for fragment in fragments)


def test_parent_linking_by_version_and_alias_predicts_through_both_and_caches_them(
    tracking_on, children, tmp_path
):
    parent = Ensemble(mlflow_models_uri={"a": "models:/child-a/1", "b": "models:/child-b@prod"})
    save_model(parent, tmp_path / "parent")
    env = {"DATAMINT_CACHE_DIR": str(tmp_path / "cache")}

    before = child_downloads(tracking_on, children)
    first = predict_in_new_process(tmp_path / "parent", env, tmp_path)
    after_first = child_downloads(tracking_on, children)
    second = predict_in_new_process(tmp_path / "parent", env, tmp_path)
    after_second = child_downloads(tracking_on, children)

    assert first == second == {"a": 1.0, "b": 2.0}  # 0.5 * 2.0 and 0.5 * 4.0 (alias -> v2)
    assert after_first > before
    assert after_second == after_first, "the second load downloaded linked artifacts again"

    tracking_on.stop()
    try:
        offline = predict_in_new_process(
            tmp_path / "parent", {**env, "DATAMINT_OFFLINE": "true"}, tmp_path
        )
        assert offline == first
    finally:
        tracking_on.start()


def test_alias_is_pinned_to_its_version_when_the_parent_is_saved(tracking_on, children, tmp_path):
    save_model(Ensemble(mlflow_models_uri={"b": "models:/child-b@prod"}), tmp_path / "parent")
    block = (
        load_model(str(tmp_path / "parent"))
        and __import__("yaml").safe_load((tmp_path / "parent" / "MLmodel").read_text())["flavors"][
            "datamint"
        ]["linked_models"]
    )
    assert block["b"]["uri"] == "models:/child-b@prod"
    assert block["b"]["resolved_uri"] == "models:/child-b/2"
    assert block["b"]["version"] == "2"

    # Moving the alias afterwards does not change what the saved parent loads.
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("child-b", "prod", "1")
    try:
        loaded = load_model(str(tmp_path / "parent"))
        (scores,) = loaded.predict([ImageResource(PIXELS)])
        assert scores[0].value == 2.0
    finally:
        client.set_registered_model_alias("child-b", "prod", "2")


def test_bundled_parent_loads_and_predicts_with_the_tracking_server_unreachable(
    tracking_on, children, tmp_path
):
    parent = Ensemble(
        mlflow_models_uri={"a": "models:/child-a/latest", "b": "models:/child-b@prod"}
    )
    save_model(parent, tmp_path / "bundled", bundle_linked_models=True)
    assert (tmp_path / "bundled" / "artifacts" / "linked_models" / "a" / "MLmodel").is_file()

    closed = f"http://127.0.0.1:{free_port()}"
    empty_cache = tmp_path / "empty-cache"
    result = predict_in_new_process(
        tmp_path / "bundled",
        {
            "MLFLOW_TRACKING_URI": closed,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "DATAMINT_CACHE_DIR": str(empty_cache),
        },
        tmp_path,
    )
    assert result == {"a": 1.0, "b": 2.0}
    assert not empty_cache.exists() or not any(empty_cache.glob("models/*"))


def test_four_processes_loading_one_uncached_model_download_it_once(
    tracking_on, children, tmp_path
):
    save_model(Ensemble(mlflow_models_uri={"a": "models:/child-a/1"}), tmp_path / "parent")
    cache_dir = tmp_path / "shared-cache"
    before = tracking_on.artifact_downloads(f"/models/{children[0]}/")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DATAMINT_CACHE_DIR": str(cache_dir)}
    # Every child imports everything, says it is ready, and waits for "go": the four loads
    # then really start together, so the cache's lock is what keeps it to one download.
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    wait_for_go = (
        "import os, pathlib, time, datamint_core\n"
        f"barrier = pathlib.Path({str(barrier)!r})\n"
        "(barrier / f'ready-{os.getpid()}').touch()\n"
        "while not (barrier / 'go').exists(): time.sleep(0.01)\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", wait_for_go + PREDICT, str(tmp_path / "parent")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        for _ in range(4)
    ]
    deadline = time.monotonic() + 180
    while len(list(barrier.glob("ready-*"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    (barrier / "go").touch()
    outputs = [process.communicate(timeout=240) for process in processes]

    assert [p.returncode for p in processes] == [0, 0, 0, 0], [err[-2000:] for _, err in outputs]
    assert {out.strip().splitlines()[-1] for out, _ in outputs} == {'{"a": 1.0}'}
    files = tracking_on.artifact_requests(f"/models/{children[0]}/")[before:]
    assert files, "nothing was downloaded"
    assert len(files) == len(set(files)), f"some files were downloaded twice: {sorted(files)}"
    assert not any((cache_dir / ".incomplete").iterdir())


def test_a_corrupted_cache_entry_is_fetched_again_online_and_refused_offline(
    tracking_on, children, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("DATAMINT_CACHE_DIR", str(tmp_path / "cache"))
    save_model(Ensemble(mlflow_models_uri={"a": "models:/child-a/1"}), tmp_path / "parent")
    load_model(str(tmp_path / "parent"))
    cached = ArtifactCache().get(model_key(mlflow.get_registry_uri(), "child-a", "1"))
    pickled = cached / "python_model.pkl"
    data = bytearray(pickled.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pickled.write_bytes(bytes(data))

    monkeypatch.setenv("DATAMINT_OFFLINE", "true")
    with pytest.raises(LinkedModelError, match=r"python_model\.pkl does not match the checksum"):
        load_model(str(tmp_path / "parent"))

    monkeypatch.delenv("DATAMINT_OFFLINE")
    before = child_downloads(tracking_on, children[:1])
    with caplog.at_level("WARNING", logger="datamint_core.artifact_cache"):
        loaded = load_model(str(tmp_path / "parent"))
    assert "is corrupted" in caplog.text and "downloading it again" in caplog.text
    assert child_downloads(tracking_on, children[:1]) > before
    assert loaded.predict([ImageResource(PIXELS)])[0][0].value == 1.0


def test_offline_mode_with_an_empty_cache_names_the_model_and_the_cache(
    tracking_on, children, tmp_path, monkeypatch
):
    save_model(Ensemble(mlflow_models_uri={"a": "models:/child-a/1"}), tmp_path / "parent")
    monkeypatch.setenv("DATAMINT_CACHE_DIR", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("DATAMINT_OFFLINE", "true")
    with pytest.raises(
        LinkedModelNotFoundError,
        match=r"'a' \(models:/child-a/1\) is not in the artifact cache at .*"
        r"nothing-here",
    ):
        load_model(str(tmp_path / "parent"))


def test_unknown_model_name_and_unknown_alias_are_named(tracking_on, children, tmp_path):
    with pytest.raises(
        LinkedModelNotFoundError,
        match=r"'x' \('models:/no-such-model/1'\) does "
        r"not exist",
    ):
        pin("x", "models:/no-such-model/1")
    with pytest.raises(LinkedModelNotFoundError, match=r"'models:/child-b@staging'"):
        pin("x", "models:/child-b@staging")
    with pytest.raises(LinkedModelNotFoundError, match="does not exist"):
        save_model(Ensemble(mlflow_models_uri={"x": "models:/child-a/99"}), tmp_path / "unused")


def test_an_unreachable_server_is_named_with_what_to_do(monkeypatch):
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", closed)  # what set_registry_uri sets too
    mlflow.set_registry_uri(closed)
    try:
        started = time.monotonic()
        with pytest.raises(
            TrackingServerUnreachableError,
            match=rf"Cannot reach the tracking server at {closed} for linked model "
            r"'a'.*bundle_linked_models=True",
        ) as caught:
            pin("a", "models:/child-a/1")
        assert isinstance(caught.value, ConnectionError)
        assert time.monotonic() - started < 30
    finally:
        mlflow.set_registry_uri(None)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/", "is not a valid model URI"),
        ("models:/seg/Production", "Stages are not supported"),
        ("runs:/", "is not a valid runs URI"),
        ("s3://bucket/model", "URI scheme of 's3://bucket/model' is not supported"),
        ("", "is not valid"),
    ],
)
def test_a_malformed_uri_is_refused_when_the_model_is_built(uri, message):
    with pytest.raises(MlflowException, match=message):
        Ensemble(mlflow_models_uri={"a": uri})


def test_a_local_path_link_loads_without_any_server(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    save_model(ScaledMean(5.0), tmp_path / "child")
    save_model(Ensemble(mlflow_models_uri={"local": str(tmp_path / "child")}), tmp_path / "parent")
    loaded = load_model(str(tmp_path / "parent"))
    assert loaded.predict([ImageResource(PIXELS)])[0][0].value == 2.5
    assert "_linked_models" not in loaded.__getstate__()


@pytest.mark.parametrize("name", ["..", ".cache", "a/b", ""])
def test_a_linked_model_name_that_could_leave_its_directory_is_refused(name):
    with pytest.raises(MlflowException, match="is not valid: use a non-empty string"):
        Ensemble(mlflow_models_uri={name: "models:/child-a/1"})


def test_a_pinned_record_from_a_newer_datamint_loads_with_a_warning(caplog):
    from datamint_core.linked_models import LinkedModel

    with caplog.at_level("WARNING", logger="datamint_core.linked_models"):
        record = LinkedModel.from_dict(
            {"key": "a", "uri": "models:/m/1", "resolved_uri": "models:/m/1", "checksum": "abc"}
        )
    assert record.resolved_uri == "models:/m/1"
    assert "ignoring field(s) ['checksum']" in caplog.text


def test_a_runs_uri_link_is_cached_under_its_run_and_always_pull_downloads_again(
    tracking_on, children, tmp_path, monkeypatch
):
    version = mlflow.MlflowClient().get_model_version("child-a", "1")
    source = mlflow.MlflowClient().get_logged_model(version.model_id) if version.model_id else None
    run_id = version.run_id
    artifact_path = source.name if source is not None else "a"
    uri = f"runs:/{run_id}/{artifact_path}"
    monkeypatch.setenv("DATAMINT_CACHE_DIR", str(tmp_path / "cache"))
    save_model(Ensemble(mlflow_models_uri={"a": uri}), tmp_path / "parent")

    assert load_model(str(tmp_path / "parent")).predict([ImageResource(PIXELS)])[0][0].value == 1.0
    cached = ArtifactCache().list()
    assert [entry.key for entry in cached] == [
        run_key(mlflow.get_tracking_uri(), run_id, artifact_path)
    ]
    assert cached[0].store_uri == tracking_on.uri

    before = len(tracking_on.artifact_requests())
    load_model(str(tmp_path / "parent"))
    assert len(tracking_on.artifact_requests()) == before, "a cache hit downloaded again"
    monkeypatch.setenv("DATAMINT_ALWAYS_PULL_ARTIFACTS", "true")
    load_model(str(tmp_path / "parent"))
    assert len(tracking_on.artifact_requests()) > before, "always_pull did not download"
