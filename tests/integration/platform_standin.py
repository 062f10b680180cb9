"""A thin stand-in of the Datamint platform for the tests: its project API and the gateway
in front of its MLflow server. Both are real HTTP servers on 127.0.0.1.

The contract they follow is the public Datamint SDK's (``datamint.api``, SonanceAI/
datamint-python-api), as far as this library uses it:

Project API (``DATAMINT_API_URL``)
    Every request must carry the key, as ``apikey: <key>`` or ``Authorization: Bearer <key>``;
    otherwise 401 ``{"error_code": "UNAUTHENTICATED", "message": ...}``.
    ``GET /projects?includeArchived=true``  -> 200 ``{"projects": [{"id", "name"}, ...]}``
    ``GET /projects/<id>``                  -> 200 ``{"id", "name"}`` or 404
    ``POST /annotations``                   -> 201; the body (``resource_id``, ``model_name``,
                                               ``project_id``, ``annotations``) is recorded.
                                               This endpoint is this library's, not checked
                                               against the real platform.

MLflow gateway (``DATAMINT_MLFLOW_URL``)
    Every request must carry ``Authorization: Bearer <key>`` (what MLflow's REST client sends
    for a token); otherwise 401 as above, and the request is not forwarded. Accepted requests
    are forwarded, without the ``Authorization`` header, to a real ``mlflow server``; the
    ``project_id`` the client sends with ``experiments/create`` and
    ``experiments/get-by-name`` is recorded (the real platform scopes experiments with it).

Nothing here is a mock of MLflow: the tracking server behind the gateway is the real one.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "host", "authorization",
                "apikey", "content-length"}


class PlatformStandIn:
    """The project API and the MLflow gateway, each on its own port.

    Args:
        api_key: the one key both accept.
        upstream: the ``http://127.0.0.1:<port>`` of the real ``mlflow server``.
        projects: the projects the API knows, as ``{"id", "name"}`` dicts.
    """

    def __init__(self, api_key: str, upstream: str, projects: list[dict[str, str]]) -> None:
        self.api_key = api_key
        self.upstream = urllib.parse.urlsplit(upstream)
        self.projects = projects
        self.lock = threading.Lock()
        #: ``Counter`` of ``"api"``/``"mlflow"`` x ``"with_key"``/``"without_key"``.
        self.requests: Counter[tuple[str, str]] = Counter()
        self.project_ids_sent: list[tuple[str, str]] = []
        self.annotations_received: list[dict[str, Any]] = []
        self._servers = [
            ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "api")),
            ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "mlflow")),
        ]
        for server in self._servers:
            server.daemon_threads = True

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def start(self) -> PlatformStandIn:
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.project_ids_sent.clear()
            self.annotations_received.clear()


def _handler(platform: PlatformStandIn, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reply(self, status: int, payload: Any = None, raw: bytes | None = None,
                   headers: list[tuple[str, str]] | None = None) -> None:
            body = raw if raw is not None else json.dumps(payload).encode()
            self.send_response(status)
            for name, value in headers or [("Content-Type", "application/json")]:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _has_key(self) -> bool:
            bearer = self.headers.get("Authorization") == f"Bearer {platform.api_key}"
            plain = role == "api" and self.headers.get("apikey") == platform.api_key
            return bearer or plain

        def _handle(self) -> None:
            body = self._body()
            allowed = self._has_key()
            with platform.lock:
                platform.requests[(role, "with_key" if allowed else "without_key")] += 1
            if not allowed:
                self._reply(401, {"error_code": "UNAUTHENTICATED",
                                  "message": "missing or wrong API key"})
                return
            if role == "api":
                self._api(body)
            else:
                self._forward(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        def _api(self, body: bytes) -> None:
            url = urllib.parse.urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            if self.command == "GET" and parts == ["projects"]:
                self._reply(200, {"projects": platform.projects})
            elif self.command == "GET" and len(parts) == 2 and parts[0] == "projects":
                found = [p for p in platform.projects if p["id"] == parts[1]]
                self._reply(200, found[0]) if found else self._reply(404, {"error": "not found"})
            elif self.command == "POST" and parts == ["annotations"]:
                with platform.lock:
                    platform.annotations_received.append(json.loads(body))
                self._reply(201, {"ok": True})
            else:
                self._reply(404, {"error": f"no route {self.command} {url.path}"})

        def _forward(self, body: bytes) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path.endswith(("/experiments/create", "/experiments/get-by-name")):
                sent = (json.loads(body or b"{}").get("project_id") if self.command == "POST"
                        else urllib.parse.parse_qs(url.query).get("project_id", [None])[0])
                with platform.lock:
                    platform.project_ids_sent.append((url.path.rsplit("/", 1)[1], sent))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            connection = http.client.HTTPConnection(
                platform.upstream.hostname, platform.upstream.port, timeout=60
            )
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                kept = [(k, v) for k, v in response.getheaders()
                        if k.lower() not in _HOP_HEADERS]
                self._reply(response.status, raw=data, headers=kept)
            finally:
                connection.close()

    return Handler
