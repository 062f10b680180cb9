"""Three real processes share one artifact cache: one clears it in a loop while two load, for
ten seconds, in turn: a registered model (``load_model("models:/...")``), a model with a
linked model (through the cache), and an entry fetched and held with the public
``ArtifactCache.hold`` and loaded by MLflow itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow

from datamint_core import log_model, save_model
from tests.conftest import REPO_ROOT
from tests.integration.linked_sample_models import Ensemble, ScaledMean

SECONDS = 10.0

LOADER = """
import json, sys, time
import mlflow
import numpy as np
from datamint_core import ArtifactCache, ImageResource, load_model
from datamint_core.artifact_cache import model_key

image = ImageResource(np.full((4, 4), 0.5))
cache = ArtifactCache()
key = model_key(mlflow.get_registry_uri(), "race-child", "1")


def download(into):
    return mlflow.artifacts.download_artifacts("models:/race-child/1", dst_path=str(into))


def through_the_public_hold():
    with cache.hold(key, download, source_uri="models:/race-child/1",
                    store_uri=mlflow.get_registry_uri()) as path:
        return mlflow.pyfunc.load_model(str(path)).predict([image.to_dict()])


loads = {
    "parent": lambda: load_model(sys.argv[1]).predict([image]),
    "registered": lambda: load_model("models:/race-child/1").predict([image]),
    "held": through_the_public_hold,
}
deadline = time.monotonic() + float(sys.argv[2])
done, failures = dict.fromkeys(loads, 0), []
while time.monotonic() < deadline:
    for name, load in loads.items():
        try:
            (answer,) = load()
            values = [a.value if hasattr(a, "value") else a["value"] for a in answer]
            assert values == [1.0], answer
            done[name] += 1
        except Exception as error:  # every failure is counted and shown
            failures.append(f"{name}: {type(error).__name__}: {error}")
print(json.dumps({"loads": done, "failures": failures[:5], "failed": len(failures)}))
"""

CLEARER = """
import json, os, sys, time
from datamint_core import ArtifactCache

cache = ArtifactCache()
stop_file, deadline = sys.argv[1], time.monotonic() + 300
rounds = removed = 0
while not os.path.exists(stop_file) and time.monotonic() < deadline:
    removed += cache.clear()
    rounds += 1
    time.sleep(0.01)
print(json.dumps({"rounds": rounds, "removed": removed}))
"""


def test_clearing_the_cache_in_a_loop_never_fails_a_load_in_two_other_processes(
    sqlite_tracking_uri, tmp_path
):
    with mlflow.start_run():
        log_model(ScaledMean(2.0), name="child", registered_model_name="race-child")
    parent = tmp_path / "parent"
    save_model(Ensemble(mlflow_models_uri={"child": "models:/race-child/1"}), parent)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "MLFLOW_TRACKING_URI": sqlite_tracking_uri,
        "MLFLOW_REGISTRY_URI": sqlite_tracking_uri,
        "DATAMINT_CACHE_DIR": str(tmp_path / "cache"),
    }

    def start(code: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    stop_file = tmp_path / "stop-clearing"
    clearer = start(CLEARER, str(stop_file))  # clears until both loaders are done
    loaders = [start(LOADER, str(parent), str(SECONDS)) for _ in range(2)]
    outcomes = []
    for process in [*loaders, clearer]:
        if process is clearer:
            stop_file.touch()
        stdout, stderr = process.communicate(timeout=240)
        assert process.returncode == 0, stderr[-3000:]
        outcomes.append(json.loads(stdout.strip().splitlines()[-1]))
    *loaded, cleared = outcomes
    print(json.dumps({"loaders": loaded, "clearer": cleared}))  # the figures, with -s

    for outcome in loaded:
        assert outcome["failed"] == 0, outcome["failures"]
        assert min(outcome["loads"].values()) >= 1, outcome  # each re-downloads what was cleared
    assert cleared["removed"] >= 2, cleared  # entries really went away under the loaders
    assert (tmp_path / "cache").is_dir()
    assert not list(Path(tmp_path / "cache" / ".incomplete").glob("discarded-*"))
