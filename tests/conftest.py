"""Fixtures shared by every suite: a private artifact cache, a real SQLite tracking store and
fresh-process runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


#: Set by scripts/test for the full environment, after the core environment has run the core
#: suites: tests/core and tests/integration then run there only where marked ``both_envs``.
CORE_SUITES_RAN_ENV = "DATAMINT_TEST_CORE_SUITES_RAN"
_CORE_SUITES = ("tests/core/", "tests/integration/")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the full environment, keep of the core suites only the tests marked ``both_envs``.

    The core environment (no torch, no Lightning, mlflow-skinny) runs tests/core and
    tests/integration whole; running them again beside torch took half of the full
    environment's time and proved little more. What does depend on torch, Lightning or the
    full mlflow being installed carries ``@pytest.mark.both_envs`` and runs in both.
    """
    if os.environ.get(CORE_SUITES_RAN_ENV) != "1":
        return
    kept, deselected = [], []
    for item in items:
        path = Path(str(item.path)).resolve().relative_to(REPO_ROOT).as_posix()
        core_only = path.startswith(_CORE_SUITES) and not item.get_closest_marker("both_envs")
        (deselected if core_only else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(scope="session", autouse=True)
def private_artifact_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The whole run caches into a temporary directory, never the user's cache.

    ``DATAMINT_CACHE_DIR`` and ``XDG_CACHE_HOME`` (the fallback when a test unsets the
    first) point into the run's temporary directory, in ``os.environ`` so that every
    subprocess a test starts inherits them. A test may still point them elsewhere.
    """
    root = tmp_path_factory.mktemp("private-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATAMINT_CACHE_DIR", str(root / "datamint"))
        patch.setenv("XDG_CACHE_HOME", str(root / "xdg"))
        yield root / "datamint"


_PLATFORM_SETTINGS = ("DATAMINT_API_KEY", "DATAMINT_API_URL", "DATAMINT_MLFLOW_URL",
                      "DATAMINT_PROJECT_ID", "DATAMINT_PROJECT_NAME", "DATAMINT_PROJECTS_DIR")


_MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def mlflow_uris_restored() -> Iterator[None]:
    """No test leaks a tracking or registry URI into the tests after it.

    ``mlflow.set_tracking_uri``/``set_registry_uri`` also write ``os.environ``, behind
    monkeypatch's back: a test that calls them before ``monkeypatch.setenv`` makes monkeypatch
    "restore" the value MLflow wrote. Set up before any test's own fixtures, this one is torn
    down after them, so what it restores wins.
    """
    saved = {name: os.environ.get(name) for name in _MLFLOW_URI_VARIABLES}
    yield
    mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
    for name, value in saved.items():  # after set_*_uri, which write the variables too
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def no_datamint_platform_settings(tmp_path_factory: pytest.TempPathFactory,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's Datamint settings (environment or config file)."""
    for name in _PLATFORM_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    config = tmp_path_factory.getbasetemp() / "no-datamint-config.json"
    monkeypatch.setenv("DATAMINT_CONFIG_FILE", str(config))


@pytest.fixture
def sqlite_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh embedded SQLite tracking + registry store, with artifacts under ``tmp_path``."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # mlflow.set_registry_uri also sets this variable and set_registry_uri(None) leaves it:
    # through monkeypatch it ends with the test, so no later test reads another store.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    monkeypatch.chdir(tmp_path)  # the default artifact root (./mlruns) lands here too
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture
def run_python(tmp_path: Path):
    """Run a Python snippet in a new process (the repo importable) and return its stdout.

    Raises AssertionError with the process's stderr when it exits non-zero, unless
    ``check=False``, in which case the CompletedProcess is returned.
    """

    def run(code: str, *, env: dict[str, str] | None = None, check: bool = True, cwd=None):
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH")])
        )
        completed = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd or tmp_path,
            timeout=240,
        )
        if not check:
            return completed
        assert completed.returncode == 0, (
            f"subprocess failed ({completed.returncode}):\n{completed.stderr[-4000:]}"
        )
        return completed.stdout

    return run
