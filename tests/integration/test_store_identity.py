"""A cached model is its own store's: two real SQLite stores both hold ``liver-seg/1``, each a
different model, and every load (in-process, ``datamint predict``, online and offline) gets
the one of the store it is configured with."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from datamint_core import ImageResource, LinkedModelNotFoundError, load_model, log_model
from datamint_core.artifact_cache import (
    MANIFEST_NAME,
    ArtifactCache,
    model_key,
    store_identity,
    write_manifest,
)
from tests.conftest import REPO_ROOT
from tests.integration.linked_sample_models import ScaledMean

IMAGE = ImageResource(np.full((4, 4), 0.5, dtype=np.float32))
#: Each store's liver-seg/1 scores mean(0.5) times its factor.
FACTORS = {"a": 2.0, "b": 8.0}


def use_store(uri: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Track into ``uri`` in this process and in the processes it starts."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # both also set their variable in os.environ
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        if uri is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, uri)


@pytest.fixture
def two_stores(tmp_path, monkeypatch) -> dict[str, str]:
    """Stores ``a`` and ``b``, each with its own ``liver-seg`` version 1 and artifacts."""
    monkeypatch.chdir(tmp_path)
    stores = {}
    for store, factor in FACTORS.items():
        root = tmp_path / f"store-{store}"
        root.mkdir()
        uri = f"sqlite:///{root / 'mlflow.db'}"
        use_store(uri, monkeypatch)
        experiment = mlflow.create_experiment("seg", artifact_location=(root / "art").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            log_model(ScaledMean(factor), name="m", registered_model_name="liver-seg")
        stores[store] = uri
    monkeypatch.setenv("DATAMINT_CACHE_DIR", str(tmp_path / "cache"))
    yield stores
    use_store(None, monkeypatch)


def score(model) -> float:
    return model.predict([IMAGE])[0][0].value


def predict_cli(tmp_path: Path, store_uri: str, **env: str) -> subprocess.CompletedProcess:
    """``datamint predict -m models:/liver-seg/1`` in a new process tracking into the store."""
    env = {"MLFLOW_TRACKING_URI": store_uri, "MLFLOW_REGISTRY_URI": store_uri, **env}
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"resources": [IMAGE.to_dict()]}))
    return subprocess.run(
        [sys.executable, "-m", "datamint_core.cli", "predict", "-m", "models:/liver-seg/1",
         "-i", str(request)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip


def cli_score(completed: subprocess.CompletedProcess) -> float:
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout)["predictions"][0][0]["value"]


def test_each_store_gets_its_own_model_online_and_offline_in_process_and_from_the_cli(
    two_stores, tmp_path, monkeypatch
):
    for store in ("a", "b", "a"):  # the second "a" is a cache hit, still store a's model
        use_store(two_stores[store], monkeypatch)
        assert score(load_model("models:/liver-seg/1")) == 0.5 * FACTORS[store], store

    cache = ArtifactCache()
    entries = {entry.store_uri: entry.key for entry in cache.list()}
    assert set(entries) == {store_identity(uri) for uri in two_stores.values()}
    assert len(set(entries.values())) == 2, "two stores shared an entry"

    for store in ("b", "a"):
        assert cli_score(predict_cli(tmp_path, two_stores[store])) == (
            0.5 * FACTORS[store]
        )

    # Offline, with both stores gone: the cache alone answers, per configured store.
    for store in two_stores:
        shutil.rmtree(tmp_path / f"store-{store}")
    monkeypatch.setenv("DATAMINT_OFFLINE", "true")
    for store in ("b", "a", "b"):
        use_store(two_stores[store], monkeypatch)
        assert score(load_model("models:/liver-seg/1")) == 0.5 * FACTORS[store], store
        assert cli_score(predict_cli(tmp_path, two_stores[store])) == (
            0.5 * FACTORS[store]
        )


def test_two_spellings_of_one_store_share_its_entry(two_stores, tmp_path, monkeypatch):
    use_store(two_stores["a"], monkeypatch)
    load_model("models:/liver-seg/1")
    (entry,) = ArtifactCache().list()

    monkeypatch.chdir(tmp_path / "store-a")
    use_store("sqlite:///./mlflow.db", monkeypatch)  # relative to the working directory
    monkeypatch.setenv("DATAMINT_OFFLINE", "true")
    assert score(load_model("models:/liver-seg/1")) == 0.5 * FACTORS["a"]
    assert [e.key for e in ArtifactCache().list()] == [entry.key]


def test_offline_a_model_cached_only_from_another_store_is_refused_and_named(
    two_stores, tmp_path, monkeypatch
):
    use_store(two_stores["a"], monkeypatch)
    load_model("models:/liver-seg/1")

    use_store(f"sqlite:///{tmp_path / 'store-c' / 'mlflow.db'}", monkeypatch)
    monkeypatch.setenv("DATAMINT_OFFLINE", "true")
    with pytest.raises(LinkedModelNotFoundError) as raised:
        load_model("models:/liver-seg/1")
    message = str(raised.value)
    assert "Model (models:/liver-seg/1) is not in the artifact cache" in message
    assert f"for the store {store_identity(mlflow.get_registry_uri())}" in message
    assert f"only from the store {store_identity(two_stores['a'])}" in message
    assert "Point MLFLOW_REGISTRY_URI at the store it came from" in message

    refused = predict_cli(tmp_path, mlflow.get_tracking_uri(), DATAMINT_OFFLINE="true")
    assert refused.returncode == 1
    assert f"only from the store {store_identity(two_stores['a'])}" in refused.stderr


def test_an_entry_from_before_stores_were_recorded_is_never_served(
    two_stores, tmp_path, monkeypatch
):
    # An old-layout entry (models/<name>/<version>, no store) holding store b's model.
    use_store(two_stores["b"], monkeypatch)
    load_model("models:/liver-seg/1")
    cache = ArtifactCache()
    (current,) = cache.list()
    legacy = cache.root / "models" / "liver-seg" / "1"
    shutil.copytree(current.path, legacy)
    (legacy / MANIFEST_NAME).unlink()
    write_manifest(legacy, key=("models", "liver-seg", "1"), source_uri="models:/liver-seg/1")
    cache.remove(current.key)
    assert [entry.store_uri for entry in cache.list()] == [None]

    use_store(two_stores["a"], monkeypatch)
    monkeypatch.setenv("DATAMINT_OFFLINE", "true")
    with pytest.raises(LinkedModelNotFoundError, match="an entry cached by an older datamint "
                       "that did not record its store"):  # fmt: skip
        load_model("models:/liver-seg/1")

    monkeypatch.delenv("DATAMINT_OFFLINE")
    assert score(load_model("models:/liver-seg/1")) == 0.5 * FACTORS["a"]  # downloaded
    assert {entry.store_uri for entry in cache.list()} == {None, store_identity(two_stores["a"])}
    assert cache.get(model_key(two_stores["a"], "liver-seg", "1")) is not None
