"""The test suite never reads or writes the user's artifact cache.

``tests/conftest.py`` points ``DATAMINT_CACHE_DIR`` (and ``XDG_CACHE_HOME``) at the run's
temporary directory for the whole session. The proof runs pytest itself, as a user would,
with a fresh home directory and none of those variables set, on a test that fills the
default cache in its own process and in a subprocess; the home cache must not appear.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow

from datamint_core import load_model, log_model
from datamint_core.artifact_cache import ArtifactCache, default_cache_dir
from tests.conftest import REPO_ROOT
from tests.core.sample_models import ThresholdSegmenter

HOME_CACHE_VARIABLES = ("DATAMINT_CACHE_DIR", "XDG_CACHE_HOME")


def test_a_load_in_a_test_and_in_its_subprocess_caches_into_the_session_cache(
    sqlite_tracking_uri, run_python
):
    with mlflow.start_run():
        log_model(ThresholdSegmenter(), name="m", registered_model_name="isolated")
    load_model("models:/isolated/1")
    child_cache = run_python(
        """
        from datamint_core import load_model
        from datamint_core.artifact_cache import default_cache_dir
        load_model("models:/isolated/1")
        print(default_cache_dir())
        """
    ).strip()

    cache = default_cache_dir()
    assert Path(child_cache) == cache
    assert [entry.key[-2:] for entry in ArtifactCache().list()] == [("isolated", "1")]
    home = Path(os.path.expanduser("~"))
    assert home not in cache.parents, f"the session cache {cache} is in the home directory"


def test_a_test_run_leaves_the_home_cache_untouched(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in HOME_CACHE_VARIABLES}
    env.update(HOME=str(home), PYTHONPATH=str(REPO_ROOT))
    selected = (
        f"{Path(__file__).relative_to(REPO_ROOT)}"
        "::test_a_load_in_a_test_and_in_its_subprocess_caches_into_the_session_cache"
    )

    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--basetemp={tmp_path / 'run'}", selected],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "1 passed" in completed.stdout
    assert not (home / ".cache" / "datamint").exists(), sorted(map(str, home.rglob("*")))
    assert list((tmp_path / "run").glob("private-cache*/datamint/stores/*/models/isolated/1"))
