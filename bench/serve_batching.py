"""Adaptive batching under load: 16 concurrent clients against a small CNN that declares a
batch size of 8, served with and without batching, by ``datamint serve`` and (where the
``[mlserver]`` extra is installed) by ``mlserver start`` with the datamint runtime.

The model is the tests' ``TinyCNN`` (``tests/mlserver/models.py``: numpy, 26 3x3
convolutions, its cost mostly per call, as a small model's is on an accelerator), saved twice:
plain and with ``ModelSettings(max_batch_size=8)``. Each server runs with one BLAS thread.
The load is ``--clients`` keep-alive connections posting one 8x8 image each request
(``wrk`` where installed, else ``http.client`` threads), ``--rounds`` rounds of
``--seconds`` per server, interleaved. Printed: requests/s and the server's CPU per request,
batched vs unbatched. Target (issue 21): batched >= 2x unbatched requests/s on this CPU.
The tests (``tests/integration/test_serve_batching.py``, ``tests/mlserver/test_batching.py``)
check that the batched answers equal unbatched ones.

    .venv/core/bin/python bench/serve_batching.py        # datamint serve only
    .venv/mlserver/bin/python bench/serve_batching.py    # both servers
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from _common import (
    Summary,
    print_header,
    print_ratio,
    print_table,
    session_cpu_seconds,
    stop_session,
    wrk_post,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from datamint_core import ModelSettings, save_model  # noqa: E402
from tests.mlserver.models import TinyCNN  # noqa: E402

SIDE = 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _image() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((SIDE, SIDE)).astype(np.float32)


class _Server:
    def __init__(self, model_path: Path, mlserver: bool) -> None:
        self.port = _free_port()
        command = [sys.executable, "-m", "datamint_core.cli", "serve", "-m", str(model_path),
                   "--port", str(self.port)]  # fmt: skip
        if mlserver:
            command += ["--enable-mlserver", "--grpc-port", str(_free_port()),
                        "--metrics-port", str(_free_port())]  # fmt: skip
            self.path = f"/v2/models/{model_path.name}/infer"
            self.ready = f"/v2/models/{model_path.name}/ready"
            pixels = _image()
            self.body = json.dumps({"inputs": [{
                "name": "img", "shape": [SIDE, SIDE], "datatype": "FP32",
                "data": pixels.ravel().tolist(), "parameters": {"kind": "image"},
            }]}).encode()  # fmt: skip
        else:
            self.path, self.ready = "/invocations", "/ping"
            buffer = io.BytesIO()
            np.save(buffer, _image())
            data = base64.b64encode(buffer.getvalue()).decode()
            self.body = json.dumps({"resources": [{
                "id": "img", "kind": "image",
                "pixel_data": {"encoding": "npy_base64", "data": data},
            }]}).encode()  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAMINT_", "MLFLOW_"))}
        env.update(PYTHONPATH=str(REPO_ROOT), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                   MKL_NUM_THREADS="1")  # fmt: skip
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 180.0) -> None:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{self.ready}", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server not ready in time")

    def stop(self) -> None:
        stop_session(self.process)


def _python_load(server: _Server, clients: int, seconds: float) -> tuple[float, int, int]:
    counts, failures, lock = [0], [0], threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        done = failed = 0
        while time.perf_counter() < deadline:
            connection.request("POST", server.path, server.body,
                               {"Content-Type": "application/json"})  # fmt: skip
            response = connection.getresponse()
            response.read()
            done, failed = done + 1, failed + (response.status != 200)
        connection.close()
        with lock:
            counts[0] += done
            failures[0] += failed

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts[0] / (time.perf_counter() - began), counts[0], failures[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--client", choices=("wrk", "python"),
                        default="wrk" if shutil.which("wrk") else "python")  # fmt: skip
    args = parser.parse_args()
    try:
        import mlserver  # noqa: F401

        kinds = {"datamint serve": False, "mlserver": True}
    except ImportError:
        kinds = {"datamint serve": False}
        print("(mlserver is not installed here: datamint serve only; run in .venv/mlserver)")

    print_header("Adaptive batching: a small CNN declaring batch size 8, 16 clients")
    print(f"load: {os.getloadavg()[0]:.2f} (1 min); client {args.client}, "
          f"{args.clients} connections, {args.rounds} x {args.seconds:g} s")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"unbatched": Path(tmp) / "cnn", "batched": Path(tmp) / "cnn-batched"}
        save_model(TinyCNN(), paths["unbatched"])
        save_model(TinyCNN(settings=ModelSettings(max_batch_size=8)), paths["batched"])
        servers = {
            (kind, label): _Server(path, mlserver)
            for kind, mlserver in kinds.items()
            for label, path in paths.items()
        }
        rates: dict = {key: [] for key in servers}
        cpu_us: dict = {key: [] for key in servers}
        failures = dict.fromkeys(servers, 0)

        def load(server: _Server, seconds: float) -> tuple[float, int, int]:
            if args.client == "wrk":
                url = f"http://127.0.0.1:{server.port}{server.path}"
                return wrk_post(url, server.body, args.clients, seconds)
            return _python_load(server, args.clients, seconds)

        try:
            for server in servers.values():
                server.wait_ready()
            for server in servers.values():
                load(server, 1)  # warm-up
            for _ in range(args.rounds):
                for key, server in servers.items():
                    before = session_cpu_seconds(server.process.pid)
                    rate, answered, failed = load(server, args.seconds)
                    used = session_cpu_seconds(server.process.pid) - before
                    rates[key].append(rate)
                    cpu_us[key].append(used / max(answered, 1) * 1e6)
                    failures[key] += failed
        finally:
            for server in servers.values():
                server.stop()
        print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
        label = {key: f"{key[0]}, {key[1]}" for key in servers}
        print_table([(label[key], Summary.of(rates[key])) for key in servers], "requests/s", 1)
        print_table(
            [(label[key], Summary.of(cpu_us[key])) for key in servers], "server CPU us/req", 0
        )
        for key in servers:
            if failures[key]:
                print(f"{label[key]}: {failures[key]} answers were not 200")
        for kind in kinds:
            ratio = 1 / print_ratio(
                f"{kind}: unbatched / batched requests/s (lower is better)",
                rates[kind, "unbatched"], rates[kind, "batched"], target=None,
            )  # fmt: skip
            print(f"  {kind}: batched is {ratio:.2f}x unbatched requests/s "
                  f"(target >= 2x: {'MET' if ratio >= 2 else 'NOT MET'})")  # fmt: skip


if __name__ == "__main__":
    main()
