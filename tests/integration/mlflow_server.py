"""A real ``mlflow server`` process on 127.0.0.1, for tests that need a tracking server."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

#: The ``mlflow`` command of an environment with the full mlflow package (``mlflow server``
#: is not in mlflow-skinny, which is all the core environment has). scripts/test sets it.
MLFLOW_COMMAND_ENV = "DATAMINT_TEST_MLFLOW"
REPO_ROOT = Path(__file__).resolve().parents[2]


def mlflow_server_command() -> list[str]:
    """The command that runs ``mlflow server``: ``$DATAMINT_TEST_MLFLOW``, else the full
    environment's ``.venv/full/bin/mlflow``, else this Python's when it has the full mlflow.

    Fails the test (never skips it) with what to do when none is there.
    """
    configured = os.environ.get(MLFLOW_COMMAND_ENV, "").strip()
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            pytest.fail(f"{MLFLOW_COMMAND_ENV}={configured!r} is not an executable mlflow command.")
        return [configured]
    full_env = REPO_ROOT / ".venv" / "full" / "bin" / "mlflow"
    if full_env.is_file():
        return [str(full_env)]
    if importlib.util.find_spec("mlflow.server") is not None and _has_flask():
        return [sys.executable, "-m", "mlflow"]
    pytest.fail(
        "These tests need `mlflow server`, which the full mlflow package provides and "
        "mlflow-skinny does not. Build the full environment (source scripts/_venv.sh && "
        f"ensure_venv full) or set {MLFLOW_COMMAND_ENV} to an mlflow command that has it."
    )


def _has_flask() -> bool:
    return importlib.util.find_spec("flask") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """``mlflow server`` with a SQLite backend and proxied artifacts (``--serve-artifacts``).

    Its access log is kept, so tests can count the artifact downloads clients made.
    """

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.log_path = root / "server.log"
        self._process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a")  # the child keeps its own copy of the descriptor
        self._process = subprocess.Popen(
            [
                *mlflow_server_command(),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--serve-artifacts",
                "--artifacts-destination",
                str(self.root / "artifacts"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": ""},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mlflow server exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer in {timeout} s")

    def stop(self) -> None:
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGTERM)
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        except ProcessLookupError:
            pass
        self._process = None

    def artifact_requests(self, fragment: str = "") -> list[str]:
        """The paths of the artifact GETs (containing ``fragment``) answered so far."""
        if not self.log_path.exists():
            return []
        marker = '"GET /api/2.0/mlflow-artifacts/artifacts/'
        return [
            line.split(marker, 1)[1].split(" ", 1)[0]
            for line in self.log_path.read_text().splitlines()
            if marker in line and fragment in line
        ]

    def artifact_downloads(self, fragment: str = "") -> int:
        """How many artifact GETs (containing ``fragment``) the server has answered so far."""
        return len(self.artifact_requests(fragment))


@contextlib.contextmanager
def tracking_into(server: MlflowServer, monkeypatch: pytest.MonkeyPatch,
                  request_timeout_s: float) -> Iterator[MlflowServer]:
    """Point this process (and its children) at ``server``, failing fast while it is down."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    # mlflow.set_registry_uri also sets this variable and set_registry_uri(None) leaves it:
    # through monkeypatch it ends with the test, so no later test reads another store.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", server.uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", str(request_timeout_s))
    mlflow.set_tracking_uri(server.uri)
    mlflow.set_registry_uri(server.uri)
    try:
        yield server
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A running tracking server (SQLite backend, proxied artifacts) for one test module."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()
