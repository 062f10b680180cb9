"""Slow, stalled and vanishing clients against a real ``datamint serve``, over raw sockets."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from datamint_core import ImageResource, VolumeResource, save_model
from tests.integration._server import Server, call, datamint_serve, read_response
from tests.integration.serving_models import ProbeSegmenter

READ_TIMEOUT_S = 3.0
GRACEFUL_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slow") / "probe-model"
    save_model(ProbeSegmenter(), path)
    return path


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory):
    process = datamint_serve(
        model_path,
        tmp_path_factory.mktemp("logs") / "server.log",
        "--read-timeout", str(READ_TIMEOUT_S),
        "--timeout", "1.5",
        "--max-request-size", "64M",
    )  # fmt: skip
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def post_head(length: int, content_type: str = "application/json") -> bytes:
    return (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def trickle(sock: socket.socket, data: bytes, stop: threading.Event) -> None:
    """Send ``data`` one byte a second until told to stop or the server hangs up."""
    for byte in data:
        if stop.wait(1.0):
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return


def image_body() -> bytes:
    pixels = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    resource = ImageResource(pixels, id="img").to_dict()
    return json.dumps({"resources": [resource], "params": {"mode": "image"}}).encode()


def trickled_request(server: Server, sent_at_once: bytes, trickled: bytes) -> tuple:
    """Send ``sent_at_once``, then trickle the rest; return the status, the answer, the
    seconds from connecting to the answer, and whether the server then hung up."""
    stop = threading.Event()
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(sent_at_once)
        sender = threading.Thread(target=trickle, args=(sock, trickled, stop))
        sender.start()
        try:
            status, answer = read_response(sock)
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            sender.join()
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:  # a trickled byte arrived after the server hung up
            closed = True
        return status, answer, elapsed, closed


def test_a_body_trickled_one_byte_a_second_gets_a_408_within_the_read_deadline(server):
    body = image_body()

    status, answer, elapsed, closed = trickled_request(server, post_head(len(body)), body)

    assert status == 408, answer
    assert answer["error_code"] == "REQUEST_TIMEOUT"
    assert f"read timeout of {READ_TIMEOUT_S:g} s (--read-timeout)" in answer["message"]
    assert READ_TIMEOUT_S - 0.5 < elapsed < READ_TIMEOUT_S + 1.5
    assert closed
    assert call(server.url + "/ping")[0] == 200


def test_a_head_trickled_one_byte_a_second_gets_a_408_and_is_disconnected(server):
    status, answer, elapsed, closed = trickled_request(server, b"", post_head(10))

    assert status == 408
    assert closed
    assert answer["error_code"] == "REQUEST_TIMEOUT"
    assert elapsed < READ_TIMEOUT_S + 2.0  # its clock starts at the connection


def test_hundreds_of_idle_half_open_connections_neither_stop_ping_nor_flood_the_log(server):
    log_lines_before = len(server.log_path.read_text(errors="replace").splitlines())
    idle = []
    try:
        for index in range(300):
            sock = connect(server)
            if index % 2:  # half of them start a request and stall
                sock.sendall(b"POST /invocations HTTP/1.1\r\nContent-Le")
            idle.append(sock)
        latencies = []
        for _ in range(10):
            started = time.monotonic()
            assert call(server.url + "/ping", timeout=5)[0] == 200
            latencies.append(time.monotonic() - started)
        time.sleep(READ_TIMEOUT_S + 1.0)  # their read deadline passes: the server hangs up
        closed = sum(_closed_by_server(sock) for sock in idle)
    finally:
        for sock in idle:
            sock.close()

    assert max(latencies) < 1.0, latencies
    assert closed == len(idle)
    log_lines = server.log_path.read_text(errors="replace").splitlines()[log_lines_before:]
    assert len(log_lines) < 10, log_lines[:20]


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        data = sock.recv(4096)
        while data:  # the 408 of a stalled head, then the close
            data = sock.recv(4096)
        return True
    except (TimeoutError, ConnectionResetError):
        return False


def test_a_client_that_disconnects_mid_upload_is_a_debug_line_not_a_traceback(server):
    body = image_body()
    with connect(server) as sock:
        sock.sendall(post_head(len(body)) + body[: len(body) // 2])
        time.sleep(0.3)
    time.sleep(0.5)

    assert call(server.url + "/ping")[0] == 200
    log = server.log()
    assert "Traceback" not in log and "Unexpected error" not in log, log


def test_ping_answers_fast_while_a_large_body_is_parsed(server):
    volume = np.random.default_rng(1).random((64, 256, 256)).astype(np.float32)  # 16 MB
    params = {"mode": "slice", "slice_index": 3}
    resources = [VolumeResource(volume, id="big").to_dict()]
    body = json.dumps({"resources": resources, "params": params}).encode()
    answers: list = []
    sender = threading.Thread(
        target=lambda: answers.append(call(server.url + "/invocations", body, timeout=60))
    )
    sender.start()
    latencies = []
    while sender.is_alive():
        started = time.monotonic()
        assert call(server.url + "/ping", timeout=5)[0] == 200
        latencies.append(time.monotonic() - started)
        time.sleep(0.02)
    sender.join()

    assert answers[0][0] == 200
    assert len(latencies) >= 3
    assert max(latencies) < 0.5, latencies


def test_a_volume_outliving_its_deadline_gets_a_504_and_the_next_request_200_at_once(server):
    volume = VolumeResource(np.random.default_rng(2).random((30, 16, 16)), id="ct").to_dict()
    slow = {"resources": [volume], "params": {"mode": "volume", "sleep_seconds": 0.2}}

    started = time.monotonic()
    timed_out = call(server.url + "/invocations", slow)
    answered_504_after = time.monotonic() - started
    started = time.monotonic()
    following = call(server.url + "/invocations", json.loads(image_body()))
    next_took = time.monotonic() - started

    assert timed_out[0] == 504, timed_out
    assert answered_504_after < 2.5
    assert following[0] == 200, following
    # The 30 slices would hold the model for 6 s; it is free at the next slice boundary.
    assert next_took < 0.8, next_took


def test_sigterm_with_a_client_trickling_a_body_exits_within_the_graceful_timeout(
    model_path, tmp_path
):
    server = datamint_serve(
        model_path,
        tmp_path / "server.log",
        "--read-timeout", "60",
        "--graceful-timeout", str(GRACEFUL_TIMEOUT_S),
    )  # fmt: skip
    stop = threading.Event()
    try:
        server.wait_ready()
        body = image_body()
        sock = connect(server)
        sock.sendall(post_head(len(body)))
        sender = threading.Thread(target=trickle, args=(sock, body, stop))
        sender.start()
        time.sleep(1.5)  # the request is in flight, its body arriving
        started = time.monotonic()
        server.process.terminate()
        returncode = server.process.wait(timeout=30)
        took = time.monotonic() - started
    finally:
        stop.set()
        server.stop()

    assert returncode == 0, server.log()
    assert took < GRACEFUL_TIMEOUT_S + 1.0, took


def test_more_connections_than_the_limit_are_refused_and_the_server_recovers(model_path, tmp_path):
    server = datamint_serve(model_path, tmp_path / "server.log", "--limit-concurrency", "20")
    sockets = []
    try:
        server.wait_ready()
        sockets = [connect(server) for _ in range(40)]
        time.sleep(0.3)
        refused = sum(_closed_now(sock) for sock in sockets)
        for sock in sockets:
            sock.close()
        time.sleep(0.3)
        recovered = call(server.url + "/ping")[0]
    finally:
        server.stop()

    assert refused >= 20
    assert recovered == 200


def _closed_now(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
