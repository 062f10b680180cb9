"""The ``python_function`` side of a Datamint model: what ``mlflow.pyfunc.load_model``
returns, and how its ``predict`` answers wherever it runs.

In a user's own process, ``predict`` returns JSON-ready annotation dicts and raises what the
model raises. Under ``mlflow models serve`` the input came over the wire, so it is treated as
``datamint serve`` treats a request: local paths only under ``DATAMINT_SERVE_ALLOW_PATH_DIRS``,
the server limits applied, and every failure answered through the one mapping of
:func:`datamint_core.errors.http_answer` (translated to MLflow's error codes, which the scoring
server turns into its HTTP status).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

from datamint_core import _mlflow_internals
from datamint_core._limits import RequestLimits, applying
from datamint_core._messages import shorten
from datamint_core._request_paths import check_request_paths, path_dirs_from_env, resolve_path_dirs
from datamint_core.errors import RequestDeadlineExceeded, ResourceError, http_answer
from datamint_core.model import BaseDatamintModel
from datamint_core.wire import wire_entries

_logger = logging.getLogger(__name__)


class _DatamintPyfuncModel:
    """What ``mlflow.pyfunc.load_model`` wraps: JSON-ready annotations out."""

    def __init__(self, python_model: BaseDatamintModel, context: Any) -> None:
        self.python_model = python_model
        self.context = context

    def predict(
        self, model_input: Any, params: dict[str, Any] | None = None
    ) -> list[list[dict[str, Any]]] | list[str]:
        """One list of annotation dicts per input, wherever this runs; with the param
        ``result_format="json"``, one JSON string per input instead (what
        ``spark_udf(..., result_type="string", params={"result_format": "json"})`` needs: it
        would make one column per annotation of a list of lists).

        Under ``mlflow models serve`` the input came over the wire: the server limits of
        ``datamint serve`` apply (``DATAMINT_SERVE_MAX_DECODED_BYTES``,
        ``DATAMINT_SERVE_MAX_SLICES``) and MLflow's request timeout
        (``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``) is the deadline at which the work stops.
        Anywhere else nothing is limited.

        Raises:
            MlflowException: ``INVALID_PARAMETER_VALUE`` with the library's own message for
                an error the request is at fault for (a 4xx in
                :func:`datamint_core.errors.http_answer`, the mapping every server shares:
                unknown mode, bad param, malformed resource, a path not allowed, an input
                over a limit), so that ``mlflow models serve`` answers 400 with it (MLflow's
                error codes have no 413 or 422). Under ``mlflow models serve`` any other
                failure is an ``INTERNAL_ERROR`` (500) naming only its type and message, so
                that no stack trace reaches the client. Either message stays short: the
                scoring server's echo of the input is dropped.
        """
        params = dict(params or {})
        as_json = _wants_json(params.pop(RESULT_FORMAT_PARAM, None))
        serving = _mlflow_internals.in_mlflow_scoring_server()
        limits = applying(_scoring_limits()) if serving else contextlib.nullcontext()
        try:
            _refuse_request_paths(model_input)
            with limits:
                result = self.python_model.predict(model_input, params)
        except Exception as error:
            answer = http_answer(error)
            if answer.is_client_error:
                raise _ClientError(answer.message, INVALID_PARAMETER_VALUE) from None
            if not serving:
                raise
            if isinstance(error, RequestDeadlineExceeded):
                raise _ClientError(  # the client already has MLflow's 504; this is for the log
                    "The request took longer than the scoring server's timeout "
                    "(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT) and was stopped.",
                    INTERNAL_ERROR,
                ) from None
            _logger.exception("The model failed on a request")
            raise _ClientError(answer.message, INTERNAL_ERROR) from None
        entries = [[annotation.to_dict() for annotation in entry] for entry in result]
        if as_json:
            return [json.dumps(entry, allow_nan=False) for entry in entries]
        return entries

    def get_raw_model(self) -> BaseDatamintModel:
        """The Datamint model itself (what ``unwrap_python_model`` gives for other models)."""
        return self.python_model


#: The pyfunc param that asks for one JSON string per input instead of annotation lists.
RESULT_FORMAT_PARAM = "result_format"
_RESULT_FORMATS = ("annotations", "json")


def _wants_json(result_format: Any) -> bool:
    if result_format is None or result_format == "annotations":
        return False
    if result_format == "json":
        return True
    raise _ClientError(
        f"Param {RESULT_FORMAT_PARAM!r}={shorten(repr(result_format), 100)} is not valid; "
        f"accepted: {list(_RESULT_FORMATS)} (default 'annotations': lists of annotation "
        "dicts; 'json': one JSON string per input).",
        INVALID_PARAMETER_VALUE,
    )


def _scoring_limits() -> RequestLimits:
    """The limits of one request to MLflow's scoring server: the server limits from the
    environment, and MLflow's request timeout as the deadline."""
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

    timeout = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()
    return RequestLimits.from_env(deadline=time.monotonic() + timeout if timeout else None)


class _ClientError(MlflowException):
    """An ``MlflowException`` whose message stays the library's own, and short.

    MLflow's scoring server rewrites the message of an ``MlflowException`` raised by
    ``predict`` to ``"Failed to predict data '<the whole input>'. Error: <message>"``
    (``mlflow.pyfunc.scoring_server.invocations``), which echoes a whole request, hundreds
    of kB of base64, back to the client. A message that only prefixes this one is ignored,
    and any message is bounded (:func:`datamint_core._messages.shorten`).
    """

    def __init__(self, message: str, error_code: int = INTERNAL_ERROR) -> None:
        super().__init__(shorten(str(message)), error_code)

    @property  # type: ignore[override]
    def message(self) -> str:
        return self.__dict__["_bounded_message"]

    @message.setter
    def message(self, value: str) -> None:
        value = str(value)
        current = self.__dict__.get("_bounded_message")
        if current is not None and value != current and value.endswith(current):
            return  # a caller prefixing our message with the input: keep ours
        self.__dict__["_bounded_message"] = shorten(value)


def _refuse_request_paths(model_input: Any) -> None:
    """Resource dicts may come from a client (``mlflow models serve``): like ``datamint
    serve``, read a local file they name only under ``DATAMINT_SERVE_ALLOW_PATH_DIRS``.
    Resource objects built in this process are the caller's own and are trusted.
    """
    records = _raw_records(model_input)
    if not any(isinstance(r, dict) and r.get("path") is not None for r in records):
        return
    check_request_paths(records, resolve_path_dirs(path_dirs_from_env()))


def _raw_records(model_input: Any) -> list[Any]:
    """The input's entries as ``predict`` reads them (:func:`datamint_core.wire.wire_entries`:
    MLflow's numpy-wrapped values and a DataFrame's NaN cells made plain); none for an input
    ``predict`` refuses anyway, with its own message."""
    try:
        return wire_entries(model_input)
    except ResourceError:
        return []
