"""``datamint serve`` under faults a client or an attacker causes, each fixed at its mechanism:
few descriptors, a huge JSON body, a body over the size limit, hostile text, a long request
past its deadline, an upload that cannot be read. Real servers, raw sockets."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamint_core import VolumeResource, save_model
from tests.integration._server import (
    Server,
    call,
    datamint_serve,
    encode_parts,
    free_port,
    read_response,
    server_env,
)
from tests.integration.serving_models import ProbeSegmenter
from tests.integration.wire_models import SliceMeans

#: What "a few kB" means for an error answer.
MAX_ERROR_BODY_BYTES = 4096


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "probe"
    save_model(ProbeSegmenter(), path)
    return path


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory):
    process = datamint_serve(
        model_path, tmp_path_factory.mktemp("logs") / "server.log", "--max-request-size", "1M"
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def ping_seconds(server: Server, timeout: float = 5.0) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(server.url + "/ping", timeout=timeout) as response:
        assert response.status == 200
    return time.perf_counter() - started


# -- descriptors ----------------------------------------------------------------------------


def test_half_open_connections_under_a_low_open_file_limit_leave_ping_answering(
    model_path, tmp_path
):
    log_path = tmp_path / "server.log"
    port = free_port()

    def low_open_file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "datamint_core.cli", "serve", "-m", str(model_path),
             "--port", str(port)],
            env=server_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=low_open_file_limit,
        )  # fmt: skip
    server = Server.attach(process, port, log_path)
    idle: list[socket.socket] = []

    def open_silent_connections(count: int) -> None:
        for _ in range(count):  # connect without waiting, and never send a byte
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            idle.append(sock)

    try:
        server.wait_ready()
        # Twice as many connections as the process has descriptors, left silent.
        open_silent_connections(512)
        time.sleep(2)  # the kernel retries what its queue dropped; the server takes them in
        latencies = [ping_seconds(server)]
        for _ in range(6):  # and more keep coming while /ping is asked
            open_silent_connections(50)
            time.sleep(0.3)
            latencies.append(ping_seconds(server))
        alive = server.process.poll() is None
    finally:
        for sock in idle:
            sock.close()
        server.stop()

    log = log_path.read_text(errors="replace")
    assert alive
    assert max(latencies) < 1.0, latencies
    assert "leaves room for" in log and "--limit-concurrency is lowered from 1000 to" in log
    assert "out of system resource" not in log and "Too many open files" not in log
    assert log_path.stat().st_size < 20_000, log[-3000:]


ACCEPT_FLOOD = """
import asyncio, logging, resource, sys
from datamint_core.serving.app import _AcceptErrorLog
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

async def main():
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_AcceptErrorLog(loop.get_exception_handler()))
    held = []
    server = await loop.create_server(
        lambda: type("Hold", (asyncio.Protocol,), {"connection_made": held.append})(),
        "127.0.0.1", 0, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    import os
    in_use = len(os.listdir("/proc/self/fd"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 8, hard))
    await asyncio.sleep(float(sys.argv[1]))
    print(len(held), flush=True)

asyncio.run(main())
"""


def test_accept_failing_for_lack_of_descriptors_is_logged_once_per_interval(tmp_path):
    script = tmp_path / "flood.py"
    script.write_text(ACCEPT_FLOOD)
    process = subprocess.Popen(
        [sys.executable, str(script), "4"], env=server_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    port = int(process.stdout.readline())
    clients = []
    try:
        for _ in range(300):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            if len(clients) % 50 == 0:
                time.sleep(0.5)  # several retries of asyncio's accept loop
        out, err = process.communicate(timeout=30)
    finally:
        for sock in clients:
            sock.close()
        process.kill()

    assert 0 < int(out.split()[-1]) < 300  # it did run out of descriptors
    assert err.count("Cannot accept connections: [Errno 24] Too many open files") == 1, err[-2000:]
    assert "Traceback" not in err
    assert len(err) < 2000


# -- big JSON -------------------------------------------------------------------------------


def list_json_body(values: int) -> bytes:
    """An image request whose pixels are ``values`` numbers in JSON lists (rows of 1000)."""
    rows = values // 1000
    row = b"[" + b",".join([b"0.4567891"] * 1000) + b"]"
    data = b"[" + b",".join([row] * rows) + b"]"
    return (
        b'{"resources": [{"kind": "image", "id": "big", "pixel_data": {"encoding": "list", '
        b'"data": ' + data + b'}}], "params": {"mode": "image"}}'
    )


def test_ping_answers_within_a_second_while_large_json_bodies_decode(model_path, tmp_path):
    server = datamint_serve(model_path, tmp_path / "server.log", "--max-request-size", "256M")
    huge = list_json_body(6_000_000)  # ~61 MB of list-encoded numbers
    accepted = list_json_body(1_000_000)  # just under the default of 1M values
    assert len(huge) > 60_000_000
    answers: dict[str, tuple[int, dict]] = {}

    def post(name: str, body: bytes) -> None:
        answers[name] = call(server.url + "/invocations", body, timeout=120)

    try:
        server.wait_ready()
        senders = [
            threading.Thread(target=post, args=(name, body))
            for name, body in (("huge", huge), ("accepted", accepted), ("accepted-2", accepted))
        ]
        for sender in senders:
            sender.start()
        latencies = []
        while any(sender.is_alive() for sender in senders):
            latencies.append(ping_seconds(server))
            time.sleep(0.02)
        for sender in senders:
            sender.join()
    finally:
        server.stop()

    status, answer = answers["huge"]
    assert (status, answer["error_code"]) == (413, "REQUEST_TOO_LARGE"), answer
    assert "more than 1048576 values (--max-json-values)" in answer["message"]
    assert "multipart/form-data part holding the .npy bytes" in answer["message"]
    assert answers["accepted"][0] == 200 and answers["accepted-2"][0] == 200
    assert len(latencies) >= 3
    assert max(latencies) < 1.0, sorted(latencies)[-5:]


# -- 413 while the client sends -------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("connection", ["close", "keep-alive"])
def test_a_client_that_keeps_sending_reads_the_413(server, framing, connection):
    total = 48 * 1024 * 1024  # 48 times the limit, all sent before reading, as urllib does
    chunk = b"[" + b"1," * 32767 + b"1]"
    head = (
        "POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Connection: {connection}\r\n"
        + (f"Content-Length: {total}\r\n" if framing == "content-length" else "")
        + ("Transfer-Encoding: chunked\r\n" if framing == "chunked" else "")
        + "\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        sent = 0
        while sent < total:
            piece = chunk[: total - sent]
            sock.sendall(
                piece if framing == "content-length" else b"%x\r\n%s\r\n" % (len(piece), piece)
            )
            sent += len(piece)
        if framing == "chunked":
            sock.sendall(b"0\r\n\r\n")
        status, answer = read_response(sock)

    assert status == 413, answer
    assert answer["error_code"] == "REQUEST_TOO_LARGE"
    assert "(--max-request-size)" in answer["message"] or "(--max-json-values)" in (
        answer["message"]
    )
    assert ping_seconds(server) < 1.0


# -- short error bodies ---------------------------------------------------------------------

_long_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=2000,
    max_size=20000,
)  # fmt: skip
_long_words = st.lists(st.sampled_from(["liver", "ct", "séries", "x" * 40, "Ⅻ"]), min_size=500,
                       max_size=3000).map(" ".join)  # fmt: skip


def hostile_requests(text: str) -> list[dict]:
    volume = VolumeResource(np.zeros((2, 4, 4), np.float32), id="v").to_dict()
    return [
        {"resources": [volume], "params": {"mode": text}},
        {"resources": [volume], "params": {"mode": "slice", "slice_index": 1, "axis": text}},
        {"resources": [{**volume, "kind": text}]},
        {"resources": [{**volume, text: 1}]},
        {text: [], "resources": [volume]},
        {"resources": [{"kind": "volume", "pixel_data": {"encoding": text, "data": text}}]},
        {"dataframe_split": {"columns": [text, text], "data": [[1, 2]]}},
    ]


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.one_of(_long_text, _long_words))
def test_error_bodies_stay_a_few_kb_and_uncut_whatever_the_input(server, text):
    for request in hostile_requests(text):
        body = json.dumps(request).encode()
        data = urllib.request.Request(
            server.url + "/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            urllib.request.urlopen(data, timeout=30)
            raise AssertionError(f"accepted {str(request)[:200]}")
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        answer = json.loads(raw)
        assert 400 <= status < 500, answer
        assert len(raw) <= MAX_ERROR_BODY_BYTES, (len(raw), answer["message"][:300])
        message = answer["message"]
        if len(message) >= 900:  # shortened: at a word, with an ellipsis
            assert message.endswith("…")


# -- deadline -------------------------------------------------------------------------------


def group_cpu_seconds(session_id: int) -> float:
    """CPU seconds of every process in a session (a server and the workers it starts)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id:  # field 6 of stat: the session id
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / os.sysconf("SC_CLK_TCK")


def burning_volume_request() -> dict:
    volume = VolumeResource(np.ones((60, 8, 8), np.float32), id="hot")
    return {"inputs": [volume.to_dict()], "params": {"mode": "volume"}}


def cpu_after_answer(server: Server, body: dict) -> tuple[int, float, float]:
    """Post ``body``; return the status, the seconds it took, and the CPU seconds the
    server's processes spend over the 1.5 s after the answer (starting 0.3 s after it)."""
    request = urllib.request.Request(
        server.url + "/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    started = time.monotonic()
    try:  # MLflow's 504 is plain text
        with urllib.request.urlopen(request, timeout=60) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    elapsed = time.monotonic() - started
    time.sleep(0.3)
    before = group_cpu_seconds(server.process.pid)
    time.sleep(1.5)
    return status, elapsed, group_cpu_seconds(server.process.pid) - before


def test_datamint_serve_stops_the_work_at_the_deadline(tmp_path):
    save_model(SliceMeans(burn_s=0.1), tmp_path / "burner")  # 60 hot slices: 6 CPU-seconds
    server = datamint_serve(tmp_path / "burner", tmp_path / "server.log", "--timeout", "1")
    try:
        server.wait_ready()
        status, elapsed, cpu = cpu_after_answer(server, burning_volume_request())
    finally:
        server.stop()

    assert status == 504 and elapsed < 3
    assert cpu < 0.3, f"{cpu:.2f} CPU-seconds after the 504"


# -- upload paths ---------------------------------------------------------------------------


def test_an_unreadable_upload_is_named_by_its_filename_never_the_servers_temporary_path(server):
    corrupt_png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"\xff" * 40
    request = {"resources": [{"pixel_data": {"encoding": "multipart", "part": "scan"}}]}
    body, content_type = encode_parts([
        ("request", None, json.dumps(request).encode(), "application/json"),
        ("scan", "my-scan.png", corrupt_png, "image/png"),
    ])  # fmt: skip

    status, answer = call(server.url + "/invocations", body, content_type)

    assert status in (413, 415, 422), answer
    assert "my-scan.png" in answer["message"]
    assert "datamint-upload" not in answer["message"] and "part-0000" not in answer["message"]
    assert "/tmp" not in answer["message"]


# -- the same through mlflow models serve ---------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mlflow-faults")
    save_model(SliceMeans(burn_s=0.1), root / "burner")
    mlflow_command = Path(sys.executable).with_name("mlflow")
    port = free_port()
    command = [str(mlflow_command), "models", "serve", "-m", str(root / "burner")]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    server = Server(
        command, port, root / "mlflow-serve.log",
        DATAMINT_SERVE_MAX_SLICES="100", MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT="2",
    )  # fmt: skip
    try:
        server.wait_ready(timeout=120)
        yield server
    finally:
        server.stop()


def test_mlflow_models_serve_answers_input_errors_briefly_without_echoing_the_input(
    mlflow_server,
):
    pixels = np.random.default_rng(0).random((60, 32, 32)).astype(np.float32)
    record = VolumeResource(pixels, id="ct").to_dict()  # ~330 kB of base64
    body = {"inputs": [record], "params": {"mode": "sideways"}}
    request = urllib.request.Request(
        mlflow_server.url + "/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    raw = refused.value.read()
    answer = json.loads(raw)

    assert refused.value.code == 400
    assert len(json.dumps(body)) > 300_000 and len(raw) <= MAX_ERROR_BODY_BYTES, len(raw)
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert answer["message"].startswith("Unknown prediction mode 'sideways'; valid values are")
    assert record["pixel_data"]["data"][:40] not in answer["message"]


def test_mlflow_models_serve_applies_the_server_limits_and_stops_at_its_timeout(mlflow_server):
    dark = VolumeResource(np.zeros((150, 4, 4), np.float32), id="long").to_dict()
    status, answer = call(
        mlflow_server.url + "/invocations",
        {"inputs": [dark], "params": {"mode": "volume"}},
    )
    hot_status, elapsed, cpu = cpu_after_answer(mlflow_server, burning_volume_request())

    assert status == 400, answer
    assert "150 slices, over the limit of 100 per request (--max-slices" in answer["message"]
    assert hot_status == 504 and elapsed < 5
    assert cpu < 0.3, f"{cpu:.2f} CPU-seconds after the 504"
