"""Three real processes share one artifact cache: one clears it in a loop while two load a
model with a linked model (through the cache) and predict, for ten seconds."""

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
import numpy as np
from datamint_core import ImageResource, load_model

image = ImageResource(np.full((4, 4), 0.5))
deadline = time.monotonic() + float(sys.argv[2])
loads, failures = 0, []
while time.monotonic() < deadline:
    try:
        (answer,) = load_model(sys.argv[1]).predict([image])
        assert [(a.identifier, a.value) for a in answer] == [("child", 1.0)], answer
        loads += 1
    except Exception as error:  # every failure is counted and shown
        failures.append(f"{type(error).__name__}: {error}")
print(json.dumps({"loads": loads, "failures": failures[:5], "failed": len(failures)}))
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

    for outcome in loaded:
        assert outcome["failed"] == 0, outcome["failures"]
        assert outcome["loads"] >= 1, outcome  # each load re-downloads what was cleared
    assert cleared["removed"] >= 2, cleared  # entries really went away under the loaders
    assert (tmp_path / "cache").is_dir()
    assert not list(Path(tmp_path / "cache" / ".incomplete").glob("discarded-*"))
