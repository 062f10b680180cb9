"""MLServer tests: they run in .venv/mlserver (scripts/test), where the [mlserver] extra is."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("mlserver", reason="the MLServer tests run in .venv/mlserver (scripts/test)")

from tests.integration._server import Server, free_port


class MLServer(Server):
    """``datamint serve --enable-mlserver`` (a real ``mlserver start``) on free local ports."""

    def __init__(self, model_path: Path, log_path: Path, **env: str) -> None:
        port, self.grpc_port, metrics = free_port(), free_port(), free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        command = [sys.executable, "-m", "datamint_core.cli", "serve", "-m", str(model_path)]
        command += ["--enable-mlserver", "--port", str(port), "--grpc-port", str(self.grpc_port)]
        command += ["--metrics-port", str(metrics)]
        super().__init__(command, port, log_path, **env)
        self.name = model_path.name

    def wait_ready(self, timeout: float = 120.0) -> float:
        started = time.perf_counter()
        url = f"{self.url}/v2/models/{self.name}/ready"
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise AssertionError(f"mlserver exited {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise AssertionError(f"mlserver not ready after {timeout} s:\n{self.log()}")

    def infer(self, body: dict) -> tuple[int, dict]:
        """POST a V2 request with urllib; return (status, JSON answer)."""
        request = urllib.request.Request(
            f"{self.url}/v2/models/{self.name}/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


def start_mlserver(model_path: Path, log_path: Path, **env: str) -> MLServer:
    server = MLServer(model_path, log_path, **env)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server
