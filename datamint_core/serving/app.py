"""The scoring server: a FastAPI app around one loaded Datamint model.

Endpoints:

- ``GET /ping``, ``GET /health``: 200 once the model is loaded (it is loaded before the
  server listens).
- ``GET /version``: the datamint and mlflow versions.
- ``GET /metadata``: the model's ``datamint`` MLmodel block: task type, supported modes and
  their params (``mode_params``), settings, annotation specs, linked models.
- ``POST /invocations``: predictions; request and answer formats, and every error, are in
  :mod:`datamint_core.serving.payload`.

Only these endpoints answer (:data:`ROUTES`; no ``/openapi.json``, ``/docs`` or ``/redoc``).

Request bodies are parsed and predicted on worker threads, so the event loop keeps
answering health checks. Parsing JSON holds the interpreter whatever thread does it, so one
JSON body is parsed at a time and a body of more than ``max_json_values`` values is refused
(413, pointing to npy_base64 and multipart) while it streams in: ``/ping`` answers within a
fraction of a second whatever is being decoded. Unless the model class says
``thread_safe = True``, one lock keeps two requests from entering the model at once. A
request that exceeds the timeout gets a 504; its thread stops at the next slice, frame,
resource or patch batch (bridges and readers call
:func:`datamint_core._limits.check_deadline` there) and frees the model lock.

An answer sent before the request body was read whole (a 413, a 415) is sent after the rest
of the body has been read and dropped (up to the read deadline and 1 GiB), so that the
client, which is still sending, can read it: closing a socket with unread data would reset
the connection and lose the answer.

Connections are bounded by the descriptors the process can open
(:func:`fit_to_open_files`); when the bound is reached, the oldest connection that has no
request in flight is closed to make room, so idle or half-open sockets cannot lock out
``/ping``. ``accept()`` failing for lack of descriptors is logged at most once per
:data:`ACCEPT_ERROR_LOG_INTERVAL_S`.

Slow clients: :func:`http_protocol` (the server's HTTP protocol) gives a client
``read_timeout`` seconds from its first byte to send the request head, and
:func:`guard_reads` (an ASGI wrapper) the rest of that time for the body; a slower client
gets a 408 and its connection is closed. A client that goes away mid-upload is a DEBUG line.

Example::

    app = create_app("models:/liver-seg/3", ServerConfig(request_timeout=30))
    uvicorn.run(app, host="127.0.0.1", port=8080)

Why one module of some 800 lines: it is one request's path end to end, in two halves that
share the read deadline and the early answer. The first is the app (endpoints, reading a body
within the limits, answering every error as :mod:`datamint_core.errors` declares it); the
second, from :func:`http_protocol` on, guards connections below the app (the read deadline, the
descriptor bound, draining a refused body), with uvicorn's private protocol kept in
:mod:`datamint_core.serving._uvicorn_internals`. The second half is the one to move out
should the module grow.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datamint_core._env import DATAMINT_SERVE_MODEL_URI
from datamint_core._limits import _ACTIVE as _ACTIVE_LIMITS
from datamint_core._limits import (
    RequestLimits,
    applying,
    check_deadline,
    current_deadline,
)
from datamint_core._messages import shorten
from datamint_core.errors import RequestDeadlineExceeded
from datamint_core.model import BaseDatamintModel
from datamint_core.resources import BaseResource
from datamint_core.serving._threads import RequestThreads
from datamint_core.serving._uvicorn_internals import READ_STARTED, guarded_h11_protocol
from datamint_core.serving.config import ServerConfig
from datamint_core.serving.payload import (
    REQUEST_PART,
    RequestError,
    build_resources,
    malformed,
    parse_json_envelope,
    predictions_to_json,
)
from datamint_core.serving.viewer import PAGE_HEADERS, STATIC_FILES, static_file, with_preview

_logger = logging.getLogger(__name__)

JSON = "application/json"
_ACCEPTED_TYPES = "application/json or multipart/form-data"


#: The endpoints the server answers: path -> methods. Anything else is a JSON 404.
ROUTES: dict[str, tuple[str, ...]] = {
    "/ping": ("GET",),
    "/health": ("GET",),
    "/version": ("GET",),
    "/metadata": ("GET",),
    "/invocations": ("POST",),
    # The viewer page (serving/static/), its files, and its predictions with a preview.
    "/": ("GET",),
    "/static/{name}": ("GET",),
    "/viewer/predict": ("POST",),
}


class ServedModel:
    """A loaded model, its MLmodel metadata, and the lock that guards it.

    Args:
        model: the Datamint model.
        metadata: its MLmodel ``datamint`` block.
    """

    def __init__(self, model: BaseDatamintModel, metadata: dict[str, Any]) -> None:
        self.model = model
        self.metadata = metadata
        self.thread_safe = bool(getattr(model, "thread_safe", False))
        self._lock = threading.Lock()
        #: Set by :meth:`enable_batching` when the model declares ``max_batch_size`` > 1.
        self.batcher: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines: dict[int, float | None] = {}  # id(resource) -> its request's

    def enable_batching(self, loop: asyncio.AbstractEventLoop, limits: RequestLimits) -> None:
        """Coalesce concurrent requests into one ``predict`` (``ModelSettings.max_batch_size``,
        see :mod:`datamint_core.serving.batching`); the batch runs under the server's limits."""
        size = getattr(self.model.settings, "max_batch_size", None)
        if not size or size <= 1:
            return
        from datamint_core.serving.batching import MicroBatcher

        def run(resources: list[BaseResource], params: dict[str, Any]) -> Any:
            # The batch stops when the last of its requests' deadlines passes (a request gone
            # already, its client answered, counts as passed).
            deadlines = [self._deadlines.get(id(resource), -math.inf) for resource in resources]
            deadline = None if None in deadlines else max(deadlines, default=None)
            batch_limits = RequestLimits(limits.max_decoded_bytes, limits.max_slices, deadline)
            with applying(batch_limits), self._lock:
                return self.model.predict(resources, params)

        self.batcher, self._loop = MicroBatcher(run, size), loop

    @classmethod
    def load(cls, model_uri: str) -> ServedModel:
        """Download (when remote) and load ``model_uri`` with its metadata."""
        import mlflow

        from datamint_core._mlmodel import read_flavors
        from datamint_core.flavor import load_model, require_datamint_flavor

        if os.path.isdir(model_uri):
            local_path = model_uri  # served in place, never copied
        else:
            download_dir = tempfile.mkdtemp(prefix="datamint-serve-")
            atexit.register(shutil.rmtree, download_dir, ignore_errors=True)
            local_path = mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=download_dir
            )
        metadata = require_datamint_flavor(read_flavors(local_path), model_uri)
        return cls(load_model(local_path), metadata)

    def predict(self, resources: list[BaseResource], params: dict[str, Any]) -> bytes:
        """Predict and return the response body; model errors propagate.

        A request whose deadline passes while it waits for the model is dropped unrun: its
        client already got a 504, and running it would only delay the requests behind it.
        """
        if self.batcher is not None and self._loop is not None:
            return predictions_to_json(self._batched(resources, params))
        if self.thread_safe:
            result = self.model.predict(resources, params)
        else:
            deadline = current_deadline()
            wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._lock.acquire(timeout=wait):
                raise RequestDeadlineExceeded("The request's deadline passed while it waited.")
            try:
                check_deadline()
                result = self.model.predict(resources, params)
            finally:
                self._lock.release()
        return predictions_to_json(result)


    def _batched(self, resources: list[BaseResource], params: dict[str, Any]) -> Any:
        import concurrent.futures

        assert self._loop is not None
        deadline = current_deadline()
        for resource in resources:
            self._deadlines[id(resource)] = deadline
        submitted = self.batcher.submit(resources, params)
        future = asyncio.run_coroutine_threadsafe(submitted, self._loop)
        try:
            return future.result(None if deadline is None else deadline - time.monotonic())
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RequestDeadlineExceeded("The request's deadline passed in its batch.") from None
        finally:
            for resource in resources:
                self._deadlines.pop(id(resource), None)


def create_app(model: str | ServedModel, config: ServerConfig | None = None) -> ASGIApp:
    """Build the scoring app for a model URI (loaded now) or an already loaded model.

    The app answers exactly :data:`ROUTES`, and reads each request body under
    ``config.read_timeout`` (:func:`guard_reads`).
    """
    import mlflow

    from datamint_core.version import __version__

    served = ServedModel.load(model) if isinstance(model, str) else model
    config = config or ServerConfig.resolve()
    versions = _json({"datamint": __version__, "mlflow": mlflow.__version__})
    metadata = _json(_public_metadata(served.metadata))
    static = {name: static_file(name) for name in STATIC_FILES}
    json_slot = threading.BoundedSemaphore(1)  # one JSON body parsed at a time
    threads: RequestThreads | None = None  # started by the first request

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_AcceptErrorLog(loop.get_exception_handler()))
        served.enable_batching(loop, RequestLimits(config.max_decoded_bytes, config.max_slices))
        try:
            yield
        finally:
            if served.batcher is not None:
                await served.batcher.close()
            if threads is not None:
                threads.close()

    app = FastAPI(
        title="datamint scoring server",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    endpoints = "; ".join(
        f"{'/'.join(methods)} {path}" for path, methods in ROUTES.items()
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(error.status_code, "HTTP_ERROR")
        path = shorten(request.url.path, 200)
        message = f"{error.detail}: {request.method} {path}. Endpoints: {endpoints}."
        return _error(RequestError(error.status_code, code, message))

    @app.get("/ping")
    @app.get("/health")
    async def ping() -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    @app.get("/version")
    async def version() -> Response:
        return Response(versions, media_type=JSON)

    @app.get("/metadata")
    async def model_metadata() -> Response:
        return Response(metadata, media_type=JSON)

    @app.get("/")
    async def viewer_page() -> Response:
        return Response(
            static["index.html"], media_type=STATIC_FILES["index.html"], headers=PAGE_HEADERS
        )

    @app.get("/static/{name}")
    async def viewer_file(name: str) -> Response:
        if name not in static:
            return _error(RequestError(404, "NOT_FOUND", f"No static file {name!r}."))
        return Response(static[name], media_type=STATIC_FILES[name], headers=PAGE_HEADERS)

    def predict_with_preview(
        served: ServedModel, resources: list[BaseResource], params: dict[str, Any]
    ) -> bytes:
        return with_preview(_predict(served, resources, params), resources)

    async def answer(
        scope: Scope, receive: Receive, respond: Callable[..., bytes]
    ) -> tuple[int, bytes]:
        nonlocal threads
        try:
            handle = await _read_request(scope, receive, config, respond, json_slot)
            # The worker thread decodes and predicts under this request's limits and
            # deadline: it runs in a copy of this context.
            limits = RequestLimits(
                max_decoded_bytes=config.max_decoded_bytes,
                max_slices=config.max_slices,
                deadline=time.monotonic() + config.request_timeout,
            )
            _ACTIVE_LIMITS.set(limits)
            if threads is None:
                threads = RequestThreads(asyncio.get_running_loop(), _thread_count(served))
            body = await _within(threads.run(handle, served), config.request_timeout)
        except RequestError as error:
            return _error_body(error)
        except ClientDisconnect:
            _logger.debug("The client went away before its request was read whole.")
            return _error_body(malformed("The client disconnected."))
        except (asyncio.TimeoutError, RequestDeadlineExceeded):
            return _error_body(
                RequestError.answering(
                    RequestDeadlineExceeded(
                        f"The request took longer than the server's timeout of "
                        f"{config.request_timeout:g} s (--timeout)."
                    )
                )
            )
        except Exception as error:  # a server bug: still a JSON answer, and keep serving
            _logger.exception("Unexpected error on a request")
            return _error_body(
                RequestError(500, "INTERNAL_ERROR", f"Server error ({type(error).__name__}).")
            )
        return 200, body

    # The prediction endpoints are plain ASGI apps, and the server calls them before FastAPI's
    # middleware and routing (which cost a small request a quarter of its time); FastAPI
    # still lists them, so that another method on their path is a 405.
    predictions = {
        "/invocations": _PredictionEndpoint(answer, _predict),
        "/viewer/predict": _PredictionEndpoint(answer, predict_with_preview),
    }
    for path, endpoint in predictions.items():
        app.router.routes.append(Route(path, endpoint, methods=list(ROUTES[path])))

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = predictions.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await app(scope, receive, send)

    routes = {route.path for route in app.routes}  # type: ignore[attr-defined]
    assert routes == set(ROUTES), f"routes {sorted(routes)} differ from ROUTES"
    return guard_reads(serve, config.read_timeout)


#: The headers of every JSON answer but its length.
_JSON_HEADER = (b"content-type", JSON.encode())


class _PredictionEndpoint:
    """``POST /invocations`` (and the viewer's predictions) as a plain ASGI app: reads the
    request and answers JSON through ``answer(scope, receive, respond)``.

    A class, not a function: Starlette's ``Route`` wraps a function as a request handler
    but calls any other callable as an ASGI app.
    """

    def __init__(
        self,
        answer: Callable[[Scope, Receive, Callable[..., bytes]], Any],
        respond: Callable[..., bytes],
    ) -> None:
        self._answer = answer
        self._respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, body = await self._answer(scope, receive, self._respond)
        headers = [_JSON_HEADER, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _thread_count(served: ServedModel) -> int:
    """Threads for the requests: asyncio's default executor's count, and, for a batching
    model, room for two full batches of requests waiting for their answers (the one running
    and the one filling), each holding its thread; fewer would cap every batch below its
    size, and each would wait out the batch time for requests that cannot come."""
    threads = min(32, (os.cpu_count() or 1) + 4)
    if served.batcher is not None:
        threads += 2 * served.batcher.max_batch_size
    return threads


def create_app_from_env() -> ASGIApp:
    """App factory for worker processes: the model URI and config come from the environment."""
    config = ServerConfig.resolve()
    return create_app(os.environ[DATAMINT_SERVE_MODEL_URI], config)


async def _read_request(
    scope: Scope,
    receive: Receive,
    config: ServerConfig,
    respond: Callable[..., bytes],
    json_slot: threading.BoundedSemaphore,
) -> Callable[[ServedModel], bytes]:
    """Read the body (within the size limits) and return the work left for a worker thread,
    which ends with ``respond(served, resources, params)``; JSON is parsed and turned into
    resources holding ``json_slot``."""
    content_type, declared = "", None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"content-length":
            declared = value.decode("latin-1")
    mime_type = content_type.split(";", 1)[0].strip().lower()
    if mime_type not in (JSON, "multipart/form-data"):
        raise RequestError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"Content-Type {content_type or '(none)'!r} is not accepted; send {_ACCEPTED_TYPES}.",
        )
    if declared is not None and declared.isdigit() and int(declared) > config.max_request_size:
        raise _too_large(config)
    allow_dirs = config.allow_path_dirs
    if mime_type == JSON:
        body = await _read_json_body(receive, config)

        def handle_json(served: ServedModel) -> bytes:
            with _holding(json_slot):
                records, params = parse_json_envelope(body)
                resources = build_resources(records, None, allow_dirs)
            return respond(served, resources, params)

        return handle_json

    stream = _capped_stream(receive, config)
    parser = _DiskSpooledParser(
        Headers(scope=scope),
        stream,
        max_part_size=config.max_request_size,
        max_files=config.max_parts,
        max_fields=config.max_parts,
    )
    try:
        form = await parser.parse()
    except MultiPartException as error:
        if parser.too_many_parts:
            raise RequestError(
                413,
                "REQUEST_TOO_LARGE",
                f"The multipart body has more than {config.max_parts} parts (files or fields); "
                "start the server with a higher --max-parts (env DATAMINT_SERVE_MAX_PARTS), or "
                "send the volume as one part (.npy, or a compressed NIfTI .nii.gz).",
            ) from None
        raise malformed(f"Cannot read the multipart body: {error}.") from None
    files: dict[str, Any] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):  # several files under one name: a DICOM series
            files.setdefault(name, []).append(value)
    files = {name: parts[0] if len(parts) == 1 else parts for name, parts in files.items()}
    if REQUEST_PART not in form:
        raise malformed(
            f"A multipart request needs a part named {REQUEST_PART!r} holding the JSON "
            f"request; found parts {sorted(form.keys())}."
        )
    envelope_part = form[REQUEST_PART]
    files.pop(REQUEST_PART, None)

    def handle_multipart(served: ServedModel) -> bytes:
        try:
            if isinstance(envelope_part, UploadFile):
                envelope_part.file.seek(0)
                envelope = envelope_part.file.read()
            else:
                envelope = envelope_part
            _check_json_values(_json_values(envelope), config)
            with _holding(json_slot):
                records, params = parse_json_envelope(envelope)
            resources = build_resources(records, files, allow_dirs)
            return respond(served, resources, params)
        finally:
            for upload in form.values():
                if isinstance(upload, UploadFile):
                    upload.file.close()

    return handle_multipart


class _DiskSpooledParser(MultiPartParser):
    """Starlette's multipart parser with file parts over 64 KiB spooled to disk at once.

    Starlette keeps each part in memory up to 1 MiB: a series of 512x512 slices (0.5 MiB
    each) would then sit whole in the server's memory beside the volume decoded from it.
    """

    spool_max_size = 64 * 1024

    @property
    def too_many_parts(self) -> bool:
        return self._current_files > self.max_files or self._current_fields > self.max_fields


def _predict(served: ServedModel, resources: list[BaseResource], params: dict[str, Any]) -> bytes:
    try:
        return served.predict(resources, params)
    except RequestDeadlineExceeded:
        raise  # the client already has its 504; the model lock is free again
    except Exception as error:  # answered with the status and code its class declares
        refusal = RequestError.answering(error)
        if refusal.status_code >= 500:  # the model's own failure, ResultShapeError included
            _logger.exception("The model failed on a request")
        raise refusal from None


def _public_metadata(block: dict[str, Any]) -> dict[str, Any]:
    """The datamint block without where linked models are stored: no internal storage URIs,
    and a linked model saved from a local directory shows only that directory's name."""
    linked = {}
    for key, record in (block.get("linked_models") or {}).items():
        public = {field: value for field, value in record.items() if field != "download_uri"}
        for field in ("uri", "resolved_uri"):
            value = public.get(field)
            if isinstance(value, str) and _is_local_path(value):
                public[field] = f"(local) {os.path.basename(value.rstrip('/')) or value}"
        linked[key] = public
    return {**block, "linked_models": linked}


def _is_local_path(uri: str) -> bool:
    return uri.startswith(("/", "~", "./", "../", "file:")) or (len(uri) > 2 and uri[1] == ":")


async def _body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The request body's chunks as they arrive; ``ClientDisconnect`` if the client goes."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _capped_stream(receive: Receive, config: ServerConfig) -> AsyncIterator[bytes]:
    """The body's chunks; a 413 as soon as it is over the size limit."""
    received = 0
    async for chunk in _body_chunks(receive):
        received += len(chunk)
        if received > config.max_request_size:
            raise _too_large(config)
        yield chunk


async def _read_json_body(receive: Receive, config: ServerConfig) -> bytes:
    """The whole JSON body; a 413 as soon as it is over the size limit or holds more than
    ``max_json_values`` values (counted as it arrives, never parsed)."""
    chunks: list[bytes] = []
    separators = 0
    async for chunk in _capped_stream(receive, config):
        separators += chunk.count(b",")
        _check_json_values(separators + 1, config)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _json_values(body: bytes | str) -> int:
    """At least as many as the values a JSON text holds (one more than its commas)."""
    return body.count(b"," if isinstance(body, bytes) else ",") + 1


def _check_json_values(values: int, config: ServerConfig) -> None:
    if values > config.max_json_values:
        raise RequestError(
            413,
            "REQUEST_TOO_LARGE",
            f"The JSON request holds more than {config.max_json_values} values "
            "(--max-json-values). Send pixel data as npy_base64 (one JSON string) or, for "
            "large arrays, as a multipart/form-data part holding the .npy bytes: neither is "
            "parsed number by number.",
        )


@contextlib.contextmanager
def _holding(slot: threading.BoundedSemaphore) -> Iterator[None]:
    """Hold ``slot`` for the block, waiting at most until the request's deadline."""
    deadline = current_deadline()
    wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
    if not slot.acquire(timeout=wait):
        raise RequestDeadlineExceeded("The request's deadline passed while it waited.")
    try:
        yield
    finally:
        slot.release()


def _too_large(config: ServerConfig) -> RequestError:
    return RequestError(
        413,
        "REQUEST_TOO_LARGE",
        f"The request body is larger than the server's limit of {config.max_request_size} "
        "bytes (--max-request-size); send fewer resources per request.",
    )


def _error(error: RequestError) -> Response:
    return Response(_json(error.to_dict()), status_code=error.status_code, media_type=JSON)


def _error_body(error: RequestError) -> tuple[int, bytes]:
    return error.status_code, _json(error.to_dict())


def _json(data: Any) -> bytes:
    import json

    # UTF-8 rather than \u escapes: a bounded message stays bounded in bytes too.
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


# -- slow clients ---------------------------------------------------------------------------

def http_protocol(read_timeout: float) -> Callable[..., asyncio.Protocol]:
    """The server's HTTP protocol, for ``uvicorn.run(http=...)``: a client has ``read_timeout``
    seconds from its first byte to send the request head (else a 408 and a closed connection;
    :func:`guard_reads` keeps the rest of that time for the body)."""
    return guarded_h11_protocol(read_timeout, _timeout_response(read_timeout))


def _timeout_response(read_timeout: float) -> bytes:
    body = _json(_read_timeout_error(read_timeout).to_dict())
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def _read_timeout_error(read_timeout: float) -> RequestError:
    return RequestError(
        408,
        "REQUEST_TIMEOUT",
        f"The request was not received whole within the server's read timeout of "
        f"{read_timeout:g} s (--read-timeout); send it faster, or send less.",
    )


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return 0


def _waits_for_continue(scope: Scope) -> bool:
    return any(
        name == b"expect" and value.lower() == b"100-continue" for name, value in scope["headers"]
    )


# -- descriptors ----------------------------------------------------------------------------

#: Descriptors kept for what is not a connection: model and upload files, logs, pipes.
RESERVED_DESCRIPTORS = 64
#: Seconds between two log lines about ``accept()`` running out of descriptors.
ACCEPT_ERROR_LOG_INTERVAL_S = 10.0


def fit_to_open_files(limit_concurrency: int) -> tuple[int, int]:
    """The connections this process can really hold, and its accept backlog.

    Raises the open-file limit (``RLIMIT_NOFILE``) to fit ``limit_concurrency`` where the
    hard limit allows. asyncio accepts up to ``backlog`` connections per wake-up, each one a
    descriptor, before a connection closed to make room gives its descriptor back; so the
    connections kept open are at most the room left by the descriptors already open,
    :data:`RESERVED_DESCRIPTORS` and three such batches. Logs a WARNING when that is fewer
    than ``limit_concurrency``.

    Returns:
        ``(connections, backlog)``.
    """
    backlog = min(2048, max(8, limit_concurrency // 8))
    try:
        import resource
    except ImportError:  # not on this platform
        return limit_concurrency, backlog
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 32
    wanted = limit_concurrency + 3 * backlog + RESERVED_DESCRIPTORS + in_use
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return limit_concurrency, backlog
    room = soft - in_use - RESERVED_DESCRIPTORS
    backlog = max(2, room // 8)
    connections = max(room - 3 * backlog, 2)
    _logger.warning(
        "The open-file limit (%d, %d in use) leaves room for %d connections: "
        "--limit-concurrency is lowered from %d to %d. Raise the limit (ulimit -n) to hold more.",
        soft, in_use, connections, limit_concurrency, connections,
    )  # fmt: skip
    return connections, backlog


class _AcceptErrorLog:
    """An event-loop exception handler that logs ``accept()`` failing for lack of
    descriptors (or memory) once per :data:`ACCEPT_ERROR_LOG_INTERVAL_S`, in one line with a
    count, and hands everything else to the previous handler.

    asyncio reports the failure for every pending connection, with a traceback, at every
    retry: under a connection flood that is megabytes of log a second.
    """

    _MESSAGE = "socket.accept() out of system resource"

    def __init__(self, previous: Callable[..., Any] | None) -> None:
        self._previous = previous
        self._last = -float("inf")
        self._suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != self._MESSAGE:
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self._last < ACCEPT_ERROR_LOG_INTERVAL_S:
            self._suppressed += 1
            return
        more = f" (and {self._suppressed} more times since)" if self._suppressed else ""
        _logger.error(
            "Cannot accept connections: %s%s; new connections wait. Raise the open-file limit "
            "(ulimit -n) or lower --limit-concurrency.",
            context.get("exception"), more,
        )  # fmt: skip
        self._last, self._suppressed = now, 0


async def _within(awaitable: Any, seconds: float) -> Any:
    """``await awaitable``, raising ``asyncio.TimeoutError`` after ``seconds``.

    ``asyncio.timeout`` (Python 3.11+) arms one timer on the current task; ``wait_for``
    would start a task per chunk read.
    """
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - Python 3.10


#: The most request body read and dropped so that an early answer (a 413) can be read.
MAX_DRAINED_BYTES = 1024**3


def guard_reads(app: ASGIApp, read_timeout: float) -> ASGIApp:
    """Wrap ``app`` so that a request's body must arrive within ``read_timeout`` of its first
    byte (else a 408 from the ``/invocations`` handler, and the connection is closed).

    An answer that starts before the body was read whole (a 413 over the size limit) waits
    while the rest is read and dropped, up to the same deadline and
    :data:`MAX_DRAINED_BYTES`: a socket closed with unread data resets the connection, and a
    client still sending would never read its answer. Past either bound, or when the client
    waits for ``100 Continue``, the answer says ``Connection: close`` instead.

    Requests without a body (``GET``) pass through untouched.
    """

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await app(scope, receive, send)
            return
        started = READ_STARTED.get()
        deadline = (started if started is not None else time.monotonic()) + read_timeout
        body_done = False

        async def receive_within_deadline() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await _within(receive(), deadline - time.monotonic())
            except asyncio.CancelledError:
                # uvicorn's graceful shutdown timed out on a client still sending: read it as
                # a disconnect (a DEBUG line) instead of a cancelled-task traceback.
                _logger.debug("Shutting down while a client was still sending its request.")
                task = asyncio.current_task()
                if task is not None and sys.version_info >= (3, 11):
                    task.uncancel()
                body_done = True
                return {"type": "http.disconnect"}
            except asyncio.TimeoutError:
                _logger.debug("A client did not send its request body within %g s.", read_timeout)
                raise _read_timeout_error(read_timeout) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def drain() -> bool:
            """Read and drop the rest of the body; whether it was all read."""
            dropped = 0
            while not body_done:
                try:
                    message = await receive_within_deadline()
                except RequestError:  # the read deadline passed
                    return False
                dropped += len(message.get("body", b""))
                if dropped > MAX_DRAINED_BYTES:
                    return False
            return True

        async def send_after_draining(message: Message) -> None:
            if message["type"] == "http.response.start":
                close = message["status"] == 408
                if not body_done and not close:
                    close = (
                        _waits_for_continue(scope)
                        or _declared_length(scope) > MAX_DRAINED_BYTES
                        or not await drain()
                    )
                if close:
                    message = {
                        **message,
                        "headers": [*message.get("headers", []), (b"connection", b"close")],
                    }
            await send(message)

        await app(scope, receive_within_deadline, send_after_draining)

    return guarded
