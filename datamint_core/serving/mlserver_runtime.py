"""A Datamint runtime for MLServer: Datamint models over the Open Inference Protocol (V2).

KServe and Seldon Core serve MLflow-style models with MLServer; this runtime
(``implementation: datamint_core.serving.mlserver_runtime.DatamintRuntime``) loads a Datamint
model the way :func:`datamint_core.load_model` does (artifact cache, ``DATAMINT_OFFLINE``,
linked models, the inference device) and answers V2 requests over REST and gRPC. It needs the
``[mlserver]`` extra; ``mlserver`` is imported by this module only.

**The V2 mapping** (the README shows a request):

- each *input tensor* is one resource: its ``name`` is the resource id, ``shape`` and
  ``datatype`` (``BOOL``, ``UINT8``..``UINT64``, ``INT8``..``INT64``, ``FP16``, ``FP32``,
  ``FP64``) the pixel array's; its ``parameters`` hold the rest of the resource: ``kind``
  (``image``, ``volume``, ``video``; by default from the number of dimensions), ``spacing``,
  ``affine`` (volumes), ``channel_names``, ``modality``. A list-valued parameter is a JSON
  list, or a JSON string of it (gRPC parameters hold scalars only);
- the request's ``parameters`` are the prediction params (``mode``, ``slice_index``,
  ``confidence_threshold``, ...); ``params`` may also hold them all as one JSON object string;
- the answer has one output, ``annotations``: ``BYTES``, shape ``[number of inputs]``, one
  element per input holding the JSON list of its annotations (``Annotation.to_dict()``,
  masks run-length encoded, as ``POST /invocations`` answers); the response parameter
  ``datamint_batch_requests`` says how many requests shared this one's ``predict`` call;
- a bad request is a V2 error with the status :mod:`datamint_core.errors` declares, as
  ``datamint serve`` answers it: 400 (malformed tensor, unknown parameter), 413 (over the
  decode limit), 422 (a resource or params the model cannot serve), 500 (the model failed);
  over gRPC the matching status code, with the same message.

**Adaptive batching**: a model that declares ``ModelSettings(max_batch_size=N)`` gets
``max_batch_size``/``max_batch_time`` in its generated ``model-settings.json``. MLServer's
own batcher concatenates tensors of one name along their first axis, which would mix
resources of different shapes; this runtime therefore takes over those two settings (it
turns MLServer's batcher off when MLServer creates it) and coalesces concurrent requests itself with
:class:`~datamint_core.serving.batching.MicroBatcher`: up to ``max_batch_size`` resources of
requests with the same params, in one ``predict``, each request validated before it joins
and retried alone when its batch fails.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput

from datamint_core._limits import RequestLimits, applying, check_decoded_size
from datamint_core.errors import (
    InputTooLargeError,
    MalformedRequestError,
    ResourceError,
    ResultShapeError,
    http_answer,
)
from datamint_core.resources import RESOURCE_KINDS, BaseResource
from datamint_core.serving.batching import DEFAULT_MAX_BATCH_TIME, MicroBatcher
from datamint_core.wire import resource_from_dict

#: The response parameter saying how many requests shared this request's predict call.
BATCH_PARAMETER = "datamint_batch_requests"
#: The output tensor's name.
OUTPUT_NAME = "annotations"
#: This runtime's ``implementation`` in ``model-settings.json``.
IMPLEMENTATION = "datamint_core.serving.mlserver_runtime.DatamintRuntime"
#: V2 datatypes accepted for pixel data, and their numpy dtypes.
DATATYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
#: Input tensor parameters that describe the resource.
INPUT_PARAMETERS = ("kind", "spacing", "affine", "channel_names", "modality")
_LIST_PARAMETERS = ("spacing", "affine", "channel_names")
#: Parameters MLServer itself sets or reads; never prediction params.
_PROTOCOL_PARAMETERS = ("content_type", "headers")


class DatamintRuntime(MLModel):
    """MLServer runtime serving one Datamint model (see the module docstring).

    ``model-settings.json`` ``parameters``: ``uri`` (the model: a local directory,
    ``models:/...``, ``runs:/...``) and, optionally, ``extra.device`` (``cpu``, ``cuda:0``).

    Each request runs under ``datamint serve``'s limits, read from the environment at load:
    ``DATAMINT_SERVE_MAX_DECODED_BYTES`` (the pixel bytes of all its input tensors together,
    checked from their declared shapes before anything is decoded) and
    ``DATAMINT_SERVE_MAX_SLICES``.
    """

    def __init__(self, settings: Any) -> None:
        # MLServer's batcher wraps predict before load() runs (and would concatenate
        # differently shaped resources): take its two settings over here, and leave it off.
        self._max_batch_size = int(settings.max_batch_size or 0)
        self._max_batch_time = float(settings.max_batch_time or 0) or DEFAULT_MAX_BATCH_TIME
        settings = settings.model_copy(update={"max_batch_size": 0, "max_batch_time": 0})
        super().__init__(settings)

    async def load(self) -> bool:
        from datamint_core.flavor import load_model

        parameters = self.settings.parameters
        uri = getattr(parameters, "uri", None)
        if not uri:
            raise MLServerError(
                "model-settings.json has no parameters.uri; set it to the Datamint model "
                "(a local directory, models:/name/version or runs:/id/path)."
            )
        from mlserver.utils import get_model_uri

        uri = await get_model_uri(self.settings)  # ./model: beside model-settings.json
        extra = dict(getattr(parameters, "extra", None) or {})
        device = extra.get("device")
        self._limits = RequestLimits.from_env()  # a bad value fails the load, naming it
        self._model = await asyncio.to_thread(load_model, uri, device)
        self._lock = threading.Lock()
        self._thread_safe = bool(getattr(self._model, "thread_safe", False))
        self._batcher: MicroBatcher | None = None
        if self._max_batch_size > 1:
            self._batcher = MicroBatcher(
                self._predict_sync,
                self._max_batch_size,
                self._max_batch_time,
            )
        return True

    async def unload(self) -> bool:
        if getattr(self, "_batcher", None) is not None:
            await self._batcher.close()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        try:
            result, shared = await self._predict(payload)
        except Exception as error:  # answered as every server answers it
            answer = http_answer(error)
            raise MLServerError(answer.message, answer.status) from None
        data = [
            json.dumps([annotation.to_dict() for annotation in entry], separators=(",", ":"))
            for entry in result
        ]
        output = ResponseOutput(
            name=OUTPUT_NAME,
            shape=[len(data)],
            datatype="BYTES",
            data=data,
            parameters={"content_type": "str"},
        )
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=[output],
            parameters={BATCH_PARAMETER: shared},
        )

    async def _predict(self, payload: InferenceRequest) -> tuple[Any, int]:
        """The request's results, and how many requests shared its ``predict`` call."""
        with applying(self._request_limits()):  # the inputs share one decode budget
            resources = [_resource(request_input) for request_input in payload.inputs]
        if not resources:
            raise MalformedRequestError(
                "The request has no inputs; send one input tensor per resource."
            )
        params = _params(payload)
        if self._batcher is not None:
            result, shared = await self._batcher.submit_counted(resources, params)
        else:
            result, shared = await asyncio.to_thread(self._predict_sync, resources, params), 1
        if len(result) != len(resources):
            raise ResultShapeError(f"{len(result)} results for {len(resources)} inputs")
        return result, shared

    def _request_limits(self) -> RequestLimits:
        return RequestLimits(self._limits.max_decoded_bytes, self._limits.max_slices)

    def _predict_sync(self, resources: list[BaseResource], params: dict[str, Any]) -> Any:
        # A request over the wire: the server limits apply (DATAMINT_SERVE_MAX_SLICES, ...).
        with applying(self._request_limits()):
            if self._thread_safe:
                return self._model.predict(resources, params)
            with self._lock:
                return self._model.predict(resources, params)


def _resource(request_input: RequestInput) -> BaseResource:
    name = request_input.name
    label = f"Input {name!r}"
    datatype = request_input.datatype
    if datatype not in DATATYPES:
        raise MalformedRequestError(
            f"{label} has datatype {datatype!r}; pixel data must be one of {list(DATATYPES)}."
        )
    shape = list(request_input.shape or [])
    if not shape or any(not isinstance(n, int) or n < 0 for n in shape):
        raise MalformedRequestError(
            f"{label} has shape {shape}; give the pixel array's dimensions."
        )
    dtype = np.dtype(DATATYPES[datatype])
    try:  # the request's budget (DATAMINT_SERVE_MAX_DECODED_BYTES), before decoding
        check_decoded_size(shape, dtype.itemsize, label)
    except InputTooLargeError:
        raise  # over the budget: a 413
    except ValueError as error:  # more dimensions than pixel data has
        raise MalformedRequestError(str(error)) from None
    count = math.prod(shape)
    pixels = _pixels(request_input, dtype, count, label).reshape(shape)
    fields = _input_fields(request_input, label)
    kind = fields.get("kind")
    if kind is not None and kind not in RESOURCE_KINDS:
        raise MalformedRequestError(
            f"{label}: parameter 'kind' is {kind!r}; accepted: {sorted(RESOURCE_KINDS)} (or "
            "leave it out: 2-D pixel data is an image, 3-D a volume, 4-D a video)."
        )
    try:  # the one way from fields to a resource, as a JSON or multipart request's
        return resource_from_dict({"id": name, "pixel_data": pixels, **fields})
    except (ResourceError, ValueError, TypeError) as error:
        raise ResourceError(f"{label}: {error}") from None


def _pixels(request_input: RequestInput, dtype: np.dtype, count: int, label: str) -> np.ndarray:
    data = request_input.data
    data = getattr(data, "root", getattr(data, "__root__", data))
    try:
        if isinstance(data, (bytes, bytearray)):  # gRPC raw_input_contents
            array = np.frombuffer(data, dtype=dtype.newbyteorder("<"))
        else:
            array = np.asarray(_flatten(data), dtype=dtype)
    except (ValueError, TypeError, OverflowError) as error:
        raise MalformedRequestError(f"{label}: unreadable {dtype} data ({error}).") from None
    except RecursionError:  # lists nested hundreds deep: a 400, not a crash
        raise MalformedRequestError(
            f"{label}: its data is lists nested far deeper than its shape "
            f"{list(request_input.shape or [])}; send a flat list of values."
        ) from None
    if array.size != count:
        raise MalformedRequestError(
            f"{label} holds {array.size} values but its shape "
            f"{list(request_input.shape)} needs {count}."
        )
    return array


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, (list, tuple)):
        if any(isinstance(item, (list, tuple)) for item in data):
            return [value for item in data for value in _flatten(item)]
        return list(data)
    return [data]


def _input_fields(request_input: RequestInput, label: str) -> dict[str, Any]:
    given = _parameters(request_input.parameters)
    unknown = sorted(set(given) - set(INPUT_PARAMETERS))
    if unknown:
        raise MalformedRequestError(
            f"{label} has unknown parameter(s) {unknown}; accepted: {list(INPUT_PARAMETERS)}."
        )
    for key in _LIST_PARAMETERS:
        if isinstance(given.get(key), str):
            try:
                given[key] = json.loads(given[key])
            except ValueError:
                raise MalformedRequestError(
                    f"{label}: parameter {key!r} must be a JSON list, got {given[key]!r}."
                ) from None
    return given


def _params(payload: InferenceRequest) -> dict[str, Any]:
    params = _parameters(payload.parameters)
    packed = params.pop("params", None)
    if packed is not None:
        try:
            unpacked = json.loads(packed) if isinstance(packed, str) else packed
        except ValueError:
            unpacked = None
        if not isinstance(unpacked, dict):
            raise MalformedRequestError(
                f"Request parameter 'params' must be a JSON object, got {packed!r}."
            )
        params = {**unpacked, **params}
    return params


def _parameters(parameters: Any) -> dict[str, Any]:
    if parameters is None:
        return {}
    data = parameters.model_dump() if hasattr(parameters, "model_dump") else dict(parameters)
    return {
        key: value
        for key, value in data.items()
        if key not in _PROTOCOL_PARAMETERS and value is not None
    }


__all__ = ["BATCH_PARAMETER", "DATATYPES", "IMPLEMENTATION", "OUTPUT_NAME", "DatamintRuntime"]
