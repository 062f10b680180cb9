"""The scoring server: a FastAPI app around one loaded Datamint model.

Endpoints:

- ``GET /ping``, ``GET /health``: 200 once the model is loaded (it is loaded before the
  server listens).
- ``GET /version``: the datamint and mlflow versions.
- ``GET /metadata``: the model's ``datamint`` MLmodel block: task type, supported modes and
  their params (``mode_params``), settings, annotation specs, linked models.
- ``POST /invocations``: predictions; request and answer formats, and every error, are in
  :mod:`datamint_core.serving.payload`.

Request bodies are parsed and predicted on worker threads, so the event loop keeps
answering health checks. Unless the model class says ``thread_safe = True``, one lock keeps
two requests from entering the model at once. A request that exceeds the timeout gets a
504; its thread finishes in the background (Python threads cannot be cancelled), holding the
model lock until then.

Example::

    app = create_app("models:/liver-seg/3", ServerConfig(request_timeout=30))
    uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from datamint_core.model import BaseDatamintModel
from datamint_core.resources import BaseResource, ResourceError
from datamint_core.routing import InvalidRequestError, UnsupportedModeError
from datamint_core.serving.config import MODEL_URI_ENV, ServerConfig
from datamint_core.serving.payload import (
    REQUEST_PART,
    RequestError,
    build_resources,
    malformed,
    parse_json_envelope,
    predictions_to_json,
)
from datamint_core.serving.viewer import STATIC_FILES, static_file, with_preview

_logger = logging.getLogger(__name__)

JSON = "application/json"
_ACCEPTED_TYPES = "application/json or multipart/form-data"


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

    @classmethod
    def load(cls, model_uri: str) -> ServedModel:
        """Download (when remote) and load ``model_uri`` with its metadata."""
        from mlflow.tracking.artifact_utils import _download_artifact_from_uri

        from datamint_core._mlmodel import read_flavors
        from datamint_core.flavor import load_model, require_datamint_flavor

        if os.path.isdir(model_uri):
            local_path = model_uri  # served in place, never copied
        else:
            download_dir = tempfile.mkdtemp(prefix="datamint-serve-")
            atexit.register(shutil.rmtree, download_dir, ignore_errors=True)
            local_path = _download_artifact_from_uri(model_uri, output_path=download_dir)
        metadata = require_datamint_flavor(read_flavors(local_path), model_uri)
        return cls(load_model(local_path), metadata)

    def predict(self, resources: list[BaseResource], params: dict[str, Any]) -> bytes:
        """Predict and return the response body; model errors propagate.

        A request whose deadline passes while it waits for the model is dropped unrun: its
        client already got a 504, and running it would only delay the requests behind it.
        """
        if self.thread_safe:
            result = self.model.predict(resources, params)
        else:
            deadline = _deadline.get()
            wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._lock.acquire(timeout=wait):
                raise _DeadlinePassed
            try:
                if deadline is not None and time.monotonic() > deadline:
                    raise _DeadlinePassed
                result = self.model.predict(resources, params)
            finally:
                self._lock.release()
        return predictions_to_json(result)


def create_app(model: str | ServedModel, config: ServerConfig | None = None) -> FastAPI:
    """Build the scoring app for a model URI (loaded now) or an already loaded model."""
    import mlflow

    from datamint_core.version import __version__

    served = ServedModel.load(model) if isinstance(model, str) else model
    config = config or ServerConfig.resolve()
    versions = _json({"datamint": __version__, "mlflow": mlflow.__version__})
    metadata = _json(_public_metadata(served.metadata))
    static = {name: static_file(name) for name in STATIC_FILES}
    app = FastAPI(title="datamint scoring server", docs_url=None, redoc_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(error.status_code, "HTTP_ERROR")
        message = f"{error.detail}: {request.method} {request.url.path}. Endpoints: " + (
            "GET /ping, /health, /version, /metadata; POST /invocations."
        )
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
        return Response(static["index.html"], media_type=STATIC_FILES["index.html"])

    @app.get("/static/{name}")
    async def viewer_file(name: str) -> Response:
        if name not in static:
            return _error(RequestError(404, "NOT_FOUND", f"No static file {name!r}."))
        return Response(static[name], media_type=STATIC_FILES[name])

    def predict_with_preview(
        served: ServedModel, resources: list[BaseResource], params: dict[str, Any]
    ) -> bytes:
        return with_preview(_predict(served, resources, params), resources)

    @app.post("/viewer/predict")
    async def viewer_predict(request: Request) -> Response:
        return await answer(request, predict_with_preview)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        return await answer(request, _predict)

    async def answer(request: Request, respond: Callable[..., bytes]) -> Response:
        try:
            handle = await _read_request(request, config, respond)
            # asyncio.to_thread copies this context, so the worker thread sees the deadline.
            _deadline.set(time.monotonic() + config.request_timeout)
            body = await asyncio.wait_for(asyncio.to_thread(handle, served), config.request_timeout)
        except RequestError as error:
            return _error(error)
        except (asyncio.TimeoutError, _DeadlinePassed):
            return _error(
                RequestError(
                    504,
                    "REQUEST_TIMEOUT",
                    f"The request took longer than the server's timeout of "
                    f"{config.request_timeout:g} s (--timeout).",
                )
            )
        except Exception as error:  # a server bug: still a JSON answer, and keep serving
            _logger.exception("Unexpected error on a request")
            return _error(RequestError(500, "INTERNAL_ERROR", f"{type(error).__name__}: {error}"))
        return Response(body, media_type=JSON)

    return app


def create_app_from_env() -> FastAPI:
    """App factory for worker processes: the model URI and config come from the environment."""
    import os

    return create_app(os.environ[MODEL_URI_ENV], ServerConfig.resolve())


async def _read_request(
    request: Request, config: ServerConfig, respond: Callable[..., bytes]
) -> Callable[[ServedModel], bytes]:
    """Read the body (within the size limit) and return the work left for a worker thread,
    which ends with ``respond(served, resources, params)``."""
    content_type = request.headers.get("content-type", "")
    mime_type = content_type.split(";", 1)[0].strip().lower()
    if mime_type not in (JSON, "multipart/form-data"):
        raise RequestError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"Content-Type {content_type or '(none)'!r} is not accepted; send {_ACCEPTED_TYPES}.",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > config.max_request_size:
        raise _too_large(config)
    stream = _capped_stream(request, config)
    allow_dirs = config.allow_path_dirs
    if mime_type == JSON:
        body = b"".join([chunk async for chunk in stream])

        def handle_json(served: ServedModel) -> bytes:
            records, params = parse_json_envelope(body)
            return respond(served, build_resources(records, None, allow_dirs), params)

        return handle_json

    parser = MultiPartParser(
        request.headers, stream, max_part_size=config.max_request_size, max_files=1000
    )
    try:
        form = await parser.parse()
    except MultiPartException as error:
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
                records, params = parse_json_envelope(envelope_part.file.read())
            else:
                records, params = parse_json_envelope(envelope_part)
            resources = build_resources(records, files, allow_dirs)
            return respond(served, resources, params)
        finally:
            for upload in form.values():
                if isinstance(upload, UploadFile):
                    upload.file.close()

    return handle_multipart


def _predict(served: ServedModel, resources: list[BaseResource], params: dict[str, Any]) -> bytes:
    try:
        return served.predict(resources, params)
    except UnsupportedModeError as error:
        raise RequestError(422, "UNSUPPORTED_MODE", str(error)) from None
    except ResourceError as error:
        raise RequestError(422, "INVALID_RESOURCE", str(error)) from None
    except InvalidRequestError as error:
        raise RequestError(422, "INVALID_PARAMETER_VALUE", str(error)) from None
    except _DeadlinePassed:
        raise  # the client already has its 504; nothing was run
    except Exception as error:  # the model's own failure, ResultShapeError included
        _logger.exception("The model failed on a request")
        raise RequestError(
            500, "MODEL_ERROR", f"The model failed: {type(error).__name__}: {error}"[:500]
        ) from None


class _DeadlinePassed(Exception):
    """The request timed out before the model was free; it was not run."""


_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "datamint_request_deadline", default=None
)


def _public_metadata(block: dict[str, Any]) -> dict[str, Any]:
    """The datamint block without where linked models are stored (internal storage URIs)."""
    linked = {
        key: {field: value for field, value in record.items() if field != "download_uri"}
        for key, record in (block.get("linked_models") or {}).items()
    }
    return {**block, "linked_models": linked}


async def _capped_stream(request: Request, config: ServerConfig) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > config.max_request_size:
            raise _too_large(config)
        yield chunk


def _too_large(config: ServerConfig) -> RequestError:
    return RequestError(
        413,
        "REQUEST_TOO_LARGE",
        f"The request body is larger than the server's limit of {config.max_request_size} "
        "bytes (--max-request-size); send fewer resources per request.",
    )


def _error(error: RequestError) -> Response:
    return Response(_json(error.to_dict()), status_code=error.status_code, media_type=JSON)


def _json(data: Any) -> bytes:
    import json

    return json.dumps(data, separators=(",", ":")).encode()
