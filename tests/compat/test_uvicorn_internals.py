"""``datamint_core.serving._uvicorn_internals`` against the installed uvicorn: real servers on
127.0.0.1, raw-socket clients that stall, no mocks.

Each test pins one thing the adapter takes from uvicorn's ``H11Protocol``: the head deadline
(``data_received``, ``conn.their_state``), the body deadline counted from the first byte (the
request task inheriting the context set in ``data_received``), the clock restarting per request
on a kept-alive connection, the connection limit (``connections``, ``cycle``,
``limit_concurrency``), and ``Config(http=...)`` taking a per-server factory.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from datamint_core.serving._uvicorn_internals import GuardedH11Protocol, guarded_h11_protocol
from datamint_core.serving.app import guard_reads, http_protocol
from datamint_core.serving.payload import RequestError
from tests.integration._server import free_port, read_response

#: Slack for a loaded two-core machine: a cut-off comes no earlier than the timeout and at
#: most this much later.
LATE_S = 1.0


async def count_body(scope, receive, send) -> None:
    """Answer ``{"received": <body bytes>}``, or the read deadline's error."""
    received = 0
    try:
        while True:
            message = await receive()
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        status, body = 200, json.dumps({"received": received}).encode()
    except RequestError as error:
        status, body = error.status_code, json.dumps(error.to_dict()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def serving(read_timeout: float, **options) -> Iterator[int]:
    """A real uvicorn server (its own thread and event loop) with the guarded protocol."""
    port = free_port()
    config = uvicorn.Config(
        guard_reads(count_body, read_timeout),
        host="127.0.0.1",
        port=port,
        http=http_protocol(read_timeout),
        lifespan="off",
        log_level="warning",
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(15)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=20)


def head(length: int) -> bytes:
    return f"POST /count HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n".encode()


def hung_up(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_client_that_stalls_mid_body_gets_a_408_at_the_read_timeout_and_is_cut_off():
    with serving(read_timeout=1.0) as port, connect(port) as sock:
        started = time.monotonic()
        sock.sendall(head(1000) + b"x" * 400)  # and no more

        status, answer = read_response(sock)
        elapsed = time.monotonic() - started

        assert status == 408
        assert answer["error_code"] == "REQUEST_TIMEOUT"
        assert "read timeout of 1 s" in answer["message"]
        assert 1.0 - 0.1 < elapsed < 1.0 + LATE_S
        assert hung_up(sock)


def test_the_body_deadline_counts_from_the_first_byte_of_the_head():
    # The protocol stamps the first byte in a context variable that the request's task, which
    # uvicorn starts inside data_received, inherits: a slow head eats into the body's time.
    with serving(read_timeout=2.0) as port, connect(port) as sock:
        request = head(1000)
        started = time.monotonic()
        sock.sendall(request[:10])
        time.sleep(1.2)
        sock.sendall(request[10:] + b"x" * 10)  # then stall mid-body

        status, answer = read_response(sock)
        elapsed = time.monotonic() - started

        assert status == 408, answer
        assert 2.0 - 0.1 < elapsed < 2.0 + LATE_S - 0.3  # not 1.2 + 2.0
        assert hung_up(sock)


def test_a_client_that_stalls_mid_head_gets_a_408_at_the_read_timeout():
    with serving(read_timeout=1.0) as port, connect(port) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /count HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and no more

        status, answer = read_response(sock)
        elapsed = time.monotonic() - started

        assert status == 408
        assert "read timeout of 1 s (--read-timeout)" in answer["message"]
        assert 1.0 - 0.1 < elapsed < 1.0 + LATE_S
        assert hung_up(sock)


def test_a_connection_that_sends_nothing_is_closed_without_an_answer_at_the_read_timeout():
    with serving(read_timeout=1.0) as port, connect(port) as sock:
        started = time.monotonic()

        assert hung_up(sock)
        assert 1.0 - 0.1 < time.monotonic() - started < 1.0 + LATE_S


def test_each_request_on_a_kept_alive_connection_gets_its_own_read_timeout():
    with serving(read_timeout=1.0, timeout_keep_alive=10) as port, connect(port) as sock:
        sock.sendall(head(3) + b"abc")
        assert read_response(sock) == (200, {"received": 3})
        time.sleep(0.7)
        # Idle 0.7 s, then 0.6 s to send the head: over 1 s since the first answer, but
        # within 1 s of this request's first byte.
        request = head(2) + b"de"
        sock.sendall(request[:5])
        time.sleep(0.6)
        sock.sendall(request[5:])

        assert read_response(sock) == (200, {"received": 2})


def test_two_servers_in_one_process_keep_their_own_read_timeouts():
    with serving(read_timeout=0.8) as fast, serving(read_timeout=2.5) as slow:
        with connect(fast) as fast_sock, connect(slow) as slow_sock:
            started = time.monotonic()
            fast_sock.sendall(head(100) + b"x")
            slow_sock.sendall(head(100) + b"x")

            fast_status, fast_answer = read_response(fast_sock)
            fast_elapsed = time.monotonic() - started
            slow_status, slow_answer = read_response(slow_sock)
            slow_elapsed = time.monotonic() - started

    assert (fast_status, slow_status) == (408, 408)
    assert "read timeout of 0.8 s" in fast_answer["message"]
    assert "read timeout of 2.5 s" in slow_answer["message"]
    assert 0.8 - 0.1 < fast_elapsed < 0.8 + LATE_S
    assert 2.5 - 0.1 < slow_elapsed < 2.5 + LATE_S


def test_at_the_connection_limit_the_oldest_idle_connection_makes_room_for_a_new_one():
    # limit_concurrency=3: uvicorn answers 503 at 3 requests, so at most 2 connections stay.
    with serving(read_timeout=10.0, limit_concurrency=3) as port:
        with connect(port) as oldest, connect(port) as second:
            time.sleep(0.2)
            with connect(port) as newest:
                assert hung_up(oldest)
                newest.sendall(head(1) + b"z")
                assert read_response(newest) == (200, {"received": 1})
                second.sendall(head(1) + b"y")
                assert read_response(second) == (200, {"received": 1})


def test_the_protocol_factory_pickles_for_worker_processes_and_builds_the_guarded_protocol():
    # `datamint serve --workers N` hands uvicorn's Config, factory included, to spawned
    # processes; a per-server class made at run time would not pickle.
    factory = pickle.loads(pickle.dumps(guarded_h11_protocol(2.5, b"HTTP/1.1 408 \r\n\r\n")))

    assert factory.func is GuardedH11Protocol
    assert factory.keywords["read_timeout"] == 2.5


@pytest.mark.parametrize("read_timeout", [0, -1.0, float("nan")])
def test_a_read_timeout_that_is_not_a_positive_number_is_refused(read_timeout):
    with pytest.raises(ValueError, match="read_timeout must be a positive number of seconds"):
        guarded_h11_protocol(read_timeout, b"")
