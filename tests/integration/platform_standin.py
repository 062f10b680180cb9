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
    Training data (the SDK's ``api.resources`` / ``api.annotations``; pages by ``offset`` and
    ``limit``, a page shorter than ``limit`` being the last):
    ``GET /resources?project={"items": [<name>], "filterType": "intersection"}``
                                            -> 200 ``{"resources": [{"id", "filename",
                                               "mimetype", "modality", ...}]}``: the
                                               resources in every project named (400 for a
                                               ``project`` that is not that JSON)
    ``GET /resources/<id>/file``            -> 200 the file's bytes, or 404
    ``POST /annotations/search``            -> 200 ``{"annotations": [{"id", "resource_id",
                                               "identifier", "type", "frame_index"}]}``, those
                                               of the body's ``resource_ids`` (and
                                               ``annotation_type``, when given)
    ``GET /annotations/<resource id>/annotations/<annotation id>/file``
                                            -> 200 the mask file's bytes, or 404

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
        #: Training data: resource descriptors, their projects, files and annotations.
        self.resources: list[dict[str, Any]] = []
        self.resource_projects: dict[str, set[str]] = {}
        self.files: dict[str, bytes] = {}
        self.annotations: list[dict[str, Any]] = []
        self.annotation_files: dict[tuple[str, str], bytes] = {}
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

    def add_resource(self, project_name: str, resource: dict[str, Any], data: bytes) -> None:
        """A resource (``id``, ``filename``, ...) of ``project_name``, with its file."""
        with self.lock:
            self.resources.append(resource)
            self.resource_projects.setdefault(resource["id"], set()).add(project_name)
            self.files[resource["id"]] = data

    def add_annotation(self, annotation: dict[str, Any], data: bytes) -> None:
        """An annotation (``id``, ``resource_id``, ``identifier``, ``type``, ...) and its file."""
        with self.lock:
            self.annotations.append(annotation)
            self.annotation_files[(annotation["resource_id"], annotation["id"])] = data

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
            elif self.command == "GET" and parts == ["resources"]:
                self._resources(urllib.parse.parse_qs(url.query))
            elif self.command == "GET" and len(parts) == 3 and parts[::2] == ["resources", "file"]:
                self._file(platform.files.get(parts[1]))
            elif self.command == "POST" and parts == ["annotations", "search"]:
                self._search(json.loads(body or b"{}"), urllib.parse.parse_qs(url.query))
            elif (self.command == "GET" and len(parts) == 5 and parts[0] == "annotations"
                  and parts[2] == "annotations" and parts[4] == "file"):
                self._file(platform.annotation_files.get((parts[1], parts[3])))
            else:
                self._reply(404, {"error": f"no route {self.command} {url.path}"})

        def _page(self, items: list[dict[str, Any]], query: dict[str, list[str]]) -> list:
            offset = int(query.get("offset", ["0"])[0])
            limit = int(query.get("limit", ["100"])[0])
            return items[offset:offset + limit]

        def _resources(self, query: dict[str, list[str]]) -> None:
            wanted: set[str] = set()
            if "project" in query:
                try:
                    wanted = set(json.loads(query["project"][0])["items"])
                except (ValueError, KeyError, TypeError):
                    self._reply(400, {"error": "project must be {\"items\": [...]}"})
                    return
            with platform.lock:
                found = [r for r in platform.resources
                         if wanted <= platform.resource_projects.get(r["id"], set())]
            self._reply(200, {"resources": self._page(found, query)})

        def _search(self, payload: dict[str, Any], query: dict[str, list[str]]) -> None:
            ids = set(payload.get("resource_ids") or [payload.get("resource_id")])
            kind = payload.get("annotation_type")
            with platform.lock:
                found = [a for a in platform.annotations if a["resource_id"] in ids
                         and (kind is None or a.get("type") == kind)]
            self._reply(200, {"annotations": self._page(found, query)})

        def _file(self, data: bytes | None) -> None:
            if data is None:
                self._reply(404, {"error": "not found"})
            else:
                self._reply(200, raw=data, headers=[("Content-Type", "application/octet-stream")])

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
