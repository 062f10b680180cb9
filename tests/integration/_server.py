"""Start ``datamint serve`` (or any server command) as a real process on a free local port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    """The environment of a server process: the repo importable, the venv's commands first."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DATAMINT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


class Server:
    """A server process and the base URL it answers on."""

    def __init__(self, command: list[str], port: int, log_path: Path, **env: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self._own_group = True  # the server and any child it starts (mlflow runs uvicorn)
        self.process = subprocess.Popen(
            command,
            env=server_env(**env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @classmethod
    def attach(cls, process: subprocess.Popen, port: int, log_path: Path) -> Server:
        """Wrap a server process started elsewhere, whose output goes to ``log_path``."""
        server = cls.__new__(cls)
        server.port, server.url, server.log_path = port, f"http://127.0.0.1:{port}", log_path
        server.process, server._log, server._own_group = process, None, False
        return server

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Poll /ping until it answers 200; return the seconds it took."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log()}")

    def _signal(self, signum: int) -> None:
        if self._own_group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait()
        if self._log is not None:
            self._log.close()
        return self.process.returncode


def datamint_serve(model_path: Path, log_path: Path, *args: str, **env: str) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "datamint_core.cli", "serve", "-m", str(model_path)]
    return Server([*command, "--port", str(port), *args], port, log_path, **env)


def call(
    url: str,
    body: bytes | dict[str, Any] | None = None,
    content_type: str = "application/json",
    method: str | None = None,
    timeout: float = 60,
) -> tuple[int, Any]:
    """One HTTP request; returns the status and the decoded JSON answer."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def multipart(fields: dict[str, tuple[str | None, bytes, str]]) -> tuple[bytes, str]:
    """Encode ``{name: (filename or None, content, content type)}`` as multipart/form-data."""
    return encode_parts([(name, *field) for name, field in fields.items()])


def encode_parts(parts: list[tuple[str, str | None, bytes, str]]) -> tuple[bytes, str]:
    """multipart/form-data from ``(name, filename or None, content, content type)``; a name
    may repeat (several files under one name are one DICOM series)."""
    boundary = "datamint-test-boundary-7d1f"
    chunks = []
    for name, filename, content, content_type in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            f"Content-Type: {content_type}\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """Read one HTTP answer from a raw socket: its status and JSON body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), json.loads(body[:length])


def run_concurrently(call: Any, clients: int, per_client: int) -> tuple[dict, float]:
    """``clients`` threads, each calling ``call(client, request)`` ``per_client`` times in turn.

    Returns:
        ``{(client, request): what call returned}`` and the wall-clock seconds it all took.
    """
    import threading

    answers: dict = {}

    def client(index: int) -> None:
        for request in range(per_client):
            answers[index, request] = call(index, request)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers, time.perf_counter() - started
