"""Scoring-server throughput, latency, payload size and cold start: ``datamint serve`` vs
``mlflow models serve --env-manager local`` and vs the stack's ceiling, a bare FastAPI app on
uvicorn (``bench/_bare_app.py``), on the same trivial model with the same client.

Measures, with one saved ``ConstantClassifier`` (``bench/_models.py``: one constant
annotation per image, no computation), each server started as its own process on 127.0.0.1
(one worker each, their default logging: MLflow logs every request, ``datamint serve`` does
not unless ``--access-log``):

- cold start: seconds from launching the command to the first ``GET /ping`` answered 200,
  interleaved, ``--cold-starts`` times each;
- small requests: requests/s, p50/p99 latency and the server's CPU time per request
  (its processes' user + system time over the round, divided by the requests answered) of
  ``POST /invocations`` with one 8x8 image as
  ``{"dataframe_records": [...], "params": {"mode": "image"}}`` (a body all three accept),
  from ``--clients`` keep-alive connections, for ``--seconds`` per round, ``--rounds``
  rounds interleaved. The client is ``wrk`` where it is installed (``--client wrk``: a C
  client that leaves the server most of a core), else threads each holding one
  ``http.client`` connection (``--client python``; no latencies from wrk). On a machine
  shared with other work, requests/s swing with the load; CPU per request does much less,
  and its ratio is printed beside;
- a 256x256x64 float32 volume (``{"mode": "volume"}``): the body size of each encoding (base64
  ``.npy`` in JSON, multipart with a raw ``.npy`` part, nested JSON lists) and the latency of
  each server on the encodings it accepts, ``--volume-repeats`` times each.

Targets (from the issues): throughput >= mlflow's and >= 75% of the bare FastAPI app's,
cold start <= mlflow's, volume payload >= 10x smaller than nested JSON lists. The script
reports whether each is met and never fails on a number. Everything is bounded (at most
``--clients`` connections, only 127.0.0.1).

Run from the repository root (about two minutes on a 2-core machine)::

    .venv/core/bin/python bench/serve_throughput.py [--seconds 4 --rounds 5 --clients 4]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import socket
import statistics
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
    percentile,
    print_header,
    print_ratio,
    print_table,
    session_cpu_seconds,
    stop_session,
    wrk_post,
)
from _models import ConstantClassifier

from datamint_core import ImageResource, VolumeResource, save_model

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
VOLUME_SHAPE = (64, 256, 256)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAMINT_", "MLFLOW_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(BENCH_DIR)])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _commands(model_path: Path, port: int) -> dict[str, list[str]]:
    bin_dir = Path(sys.executable).parent
    return {
        "datamint serve": [
            str(bin_dir / "datamint"), "serve", "-m", str(model_path), "--port", str(port),
        ],
        "mlflow models serve": [
            str(bin_dir / "mlflow"), "models", "serve", "-m", str(model_path),
            "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
        ],
        # The ceiling: uvicorn's defaults but the access log (datamint serve logs no request
        # by default either).
        "bare FastAPI app": [
            sys.executable, "-m", "uvicorn", "_bare_app:create", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        ],
    }  # fmt: skip


class _Server:
    def __init__(self, name: str, model_path: Path) -> None:
        self.port = _free_port()
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            _commands(model_path, self.port)[name],
            env={**_env(), "BENCH_MODEL_PATH": str(model_path)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120.0) -> float:
        while time.perf_counter() - self.started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=1):
                    return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("server did not answer /ping in time")

    def cpu_seconds(self) -> float:
        return session_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        stop_session(self.process)


def _post(connection: http.client.HTTPConnection, body: bytes, content_type: str) -> int:
    connection.request("POST", "/invocations", body, {"Content-Type": content_type})
    response = connection.getresponse()
    response.read()
    return response.status


def _load(port: int, body: bytes, clients: int, seconds: float) -> tuple[float, list[float], int]:
    """``clients`` keep-alive threads post ``body`` for ``seconds``: (req/s, latencies, fails)."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status = _post(connection, body, "application/json")
            mine.append(time.perf_counter() - started)
            if status != 200:
                with lock:
                    failures[0] += 1
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.perf_counter() - began), latencies, failures[0]


def _volume_bodies(volume: np.ndarray) -> dict[str, tuple[bytes, str]]:
    resource = VolumeResource(volume, id="ct-1")
    params = {"mode": "volume"}
    inline = json.dumps({"dataframe_records": [resource.to_dict()], "params": params}).encode()
    lists = json.dumps(
        {"dataframe_records": [resource.to_dict(pixel_encoding="list")], "params": params}
    ).encode()
    described = {**resource.to_dict(pixel_encoding="none")}
    described["pixel_data"] = {"encoding": "multipart", "part": "ct"}
    npy = io.BytesIO()
    np.save(npy, volume)
    boundary = "datamint-bench-boundary"
    request_part = json.dumps({"resources": [described], "params": params}).encode()
    upload = b"".join(
        [
            f'--{boundary}\r\nContent-Disposition: form-data; name="request"\r\n'.encode(),
            b"Content-Type: application/json\r\n\r\n" + request_part + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="ct"; '.encode(),
            b'filename="ct.npy"\r\n',
            b"Content-Type: application/octet-stream\r\n\r\n" + npy.getvalue() + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
    )
    return {
        "npy_base64 JSON": (inline, "application/json"),
        "multipart .npy": (upload, f"multipart/form-data; boundary={boundary}"),
        "nested JSON lists": (lists, "application/json"),
    }


def _timed_posts(port: int, body: bytes, content_type: str, repeats: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        status = _post(connection, body, content_type)
        timings.append(time.perf_counter() - started)
        if status != 200:
            print(f"  (a volume request got HTTP {status})")
    connection.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per throughput round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4, help="at most 16")
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--volume-repeats", type=int, default=3)
    parser.add_argument(
        "--client",
        choices=("wrk", "python"),
        default="wrk" if shutil.which("wrk") else "python",
        help="the load generator (default: wrk where installed)",
    )
    args = parser.parse_args()
    clients = max(1, min(args.clients, 16))
    ours, mlflow_serve, bare = "datamint serve", "mlflow models serve", "bare FastAPI app"
    names = (ours, mlflow_serve, bare)

    print_header(
        "Scoring servers: datamint serve vs mlflow models serve --env-manager local "
        "vs a bare FastAPI app"
    )
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "constant-classifier"
        save_model(ConstantClassifier(), model_path)

        cold: dict[str, list[float]] = {name: [] for name in (ours, mlflow_serve)}
        for _ in range(args.cold_starts):
            for name in cold:
                server = _Server(name, model_path)
                try:
                    cold[name].append(server.wait_ready())
                finally:
                    server.stop()
        print("== cold start: launch to first 200 on /ping ==")
        print_table([(name, Summary.of(cold[name])) for name in cold], "s")
        print_ratio("cold start, ours / mlflow", cold[ours], cold[mlflow_serve], target=1.0)
        print()

        image = ImageResource(np.random.default_rng(0).random((8, 8)).astype(np.float32))
        small = json.dumps(
            {"dataframe_records": [image.to_dict()], "params": {"mode": "image"}}
        ).encode()
        rates: dict[str, list[float]] = {name: [] for name in names}
        cpu_us: dict[str, list[float]] = {name: [] for name in names}
        latencies: dict[str, list[float]] = {name: [] for name in names}
        failures = dict.fromkeys(names, 0)
        servers = {name: _Server(name, model_path) for name in names}

        def load(server: _Server, seconds: float) -> tuple[float, int, int, list[float]]:
            if args.client == "wrk":
                url = f"http://127.0.0.1:{server.port}/invocations"
                return (*wrk_post(url, small, clients, seconds), [])
            rate, taken, failed = _load(server.port, small, clients, seconds)
            return rate, len(taken), failed, taken

        try:
            for server in servers.values():
                server.wait_ready()
            for server in servers.values():  # warm-up
                load(server, 1)
            for _ in range(args.rounds):
                for name, server in servers.items():
                    cpu_before = server.cpu_seconds()
                    rate, answered, failed, taken = load(server, args.seconds)
                    cpu_us[name].append((server.cpu_seconds() - cpu_before) / answered * 1e6)
                    rates[name].append(rate)
                    latencies[name].extend(taken)
                    failures[name] += failed
            print(
                f"== small requests: one 8x8 image, {clients} keep-alive connections ({args.client}"
                f"), {args.rounds} x {args.seconds:g} s each, interleaved =="
            )
            print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
            print_table([(name, Summary.of(rates[name])) for name in names], "requests/s", 1)
            print_table(
                [(name, Summary.of(cpu_us[name])) for name in names], "server CPU us/req", 1
            )
            for name in names:
                if latencies[name]:
                    ms = [t * 1000 for t in latencies[name]]
                    print(
                        f"{name:<20} latency p50 {Summary.of(ms).median:7.2f} ms, "
                        f"p99 {percentile(ms, 99):7.2f} ms"
                    )
                print(f"{name:<20} {failures[name]} requests failed")
            throughput = print_ratio(
                "throughput, mlflow / ours (lower is better for us)",
                rates[mlflow_serve],
                rates[ours],
                target=1.0,
            )
            print(f"  ours is {1 / throughput:.2f}x mlflow's requests/s")
            print_ratio("share of the ceiling: ours / bare FastAPI app, requests/s",
                        rates[ours], rates[bare], target=None)  # fmt: skip
            share = statistics.median(rates[ours]) / statistics.median(rates[bare])
            cpu_share = statistics.median(cpu_us[bare]) / statistics.median(cpu_us[ours])
            for label, value in (("requests/s", share), ("CPU per request", cpu_share)):
                print(
                    f"  target ours >= 75% of the bare app ({label}): "
                    f"{'MET' if value >= 0.75 else 'NOT MET'} ({value:.0%})"
                )
            print()

            volume = np.random.default_rng(1).random(VOLUME_SHAPE).astype(np.float32)
            bodies = _volume_bodies(volume)
            print(f"== a {VOLUME_SHAPE[1]}x{VOLUME_SHAPE[2]}x{VOLUME_SHAPE[0]} float32 volume "
                  f"({volume.nbytes / 1e6:.1f} MB of pixels), mode=volume ==")  # fmt: skip
            list_size = len(bodies["nested JSON lists"][0])
            for encoding, (body, _) in bodies.items():
                print(
                    f"{encoding:<18} body {len(body) / 1e6:8.1f} MB "
                    f"({list_size / len(body):5.1f}x smaller than nested lists)"
                )
            best = min(len(body) for body, _ in bodies.values())
            print(
                f"  target >= 10x smaller than nested lists: "
                f"{'MET' if list_size / best >= 10 else 'NOT MET'} ({list_size / best:.1f}x)"
            )
            rows = []
            accepted = {
                ours: list(bodies),
                mlflow_serve: ["npy_base64 JSON", "nested JSON lists"],
            }
            for name in accepted:
                for encoding in accepted[name]:
                    body, content_type = bodies[encoding]
                    timings = _timed_posts(
                        servers[name].port, body, content_type, args.volume_repeats
                    )
                    rows.append((f"{name}, {encoding}", Summary.of(timings)))
            print_table(rows, "s per request", 3)
        finally:
            for server in servers.values():
                server.stop()


if __name__ == "__main__":
    main()
