"""Every error a user of datamint can catch, each with the HTTP status and error code it is
answered with.

Each error is also a standard exception where one fits (as huggingface_hub's are), so a
caller can catch either: ``except ResourceError`` or ``except ValueError``, ``except
CacheNotWritableError`` or ``except PermissionError``. All of them are
:class:`DatamintError`, and all are exported from :mod:`datamint_core`.

Each class carries ``http_status`` and ``error_code``: what a server answers when the error
ends a request. ``datamint serve``, the MLServer runtime and the pyfunc under ``mlflow models
serve`` all answer through :func:`http_answer`, the one mapping from an exception to an
answer:

- 4xx: the request is at fault (a malformed envelope, a resource that cannot be built, a
  param the model does not take, an input over a limit); the message is the error's own;
- 503: a service the server needs did not answer (retry later); 502: it refused;
- 500: the server's or the model's own failure; the message names only the error's type and
  message, server-side paths hidden (:func:`datamint_core._messages.model_failure_message`).
  Any exception that is not a :class:`DatamintError` is the model's own failure: 500
  ``MODEL_ERROR``.

==============================  =================================  ====  ===========================
error                           also a                             HTTP  error code
==============================  =================================  ====  ===========================
DatamintError                   Exception                          500   INTERNAL_ERROR
InvalidRequestError             ValueError                         422   INVALID_PARAMETER_VALUE
MalformedRequestError           InvalidRequestError                400   MALFORMED_REQUEST
UnsupportedModeError            InvalidRequestError,               422   UNSUPPORTED_MODE
                                NotImplementedError
PromptError                     InvalidRequestError                422   INVALID_PARAMETER_VALUE
PathNotAllowedError             PermissionError                    403   PATH_NOT_ALLOWED
ResourceError                   ValueError                         422   INVALID_RESOURCE
InputTooLargeError              ValueError                         413   INPUT_TOO_LARGE
RequestDeadlineExceeded         TimeoutError                       504   REQUEST_TIMEOUT
ResultShapeError                ValueError                         500   MODEL_ERROR
PatchResultError                ValueError                         500   MODEL_ERROR
CacheError                      RuntimeError                       500   CACHE_ERROR
CorruptedCacheEntryError        CacheError, OSError                500   CORRUPTED_CACHE_ENTRY
CacheNotWritableError           CacheError, PermissionError        500   CACHE_NOT_WRITABLE
LinkedModelError                RuntimeError                       500   LINKED_MODEL_ERROR
LinkedModelNotFoundError        LinkedModelError, LookupError      500   LINKED_MODEL_NOT_FOUND
TrackingServerUnreachableError  LinkedModelError, ConnectionError  503   TRACKING_SERVER_UNREACHABLE
PlatformConfigError             ValueError                         500   PLATFORM_CONFIG_INVALID
PlatformAuthError               PermissionError                    502   PLATFORM_AUTH_FAILED
PlatformUnreachableError        ConnectionError                    503   PLATFORM_UNREACHABLE
PlatformRequestError            RuntimeError                       502   PLATFORM_REQUEST_FAILED
ProjectNotFoundError            LookupError                        500   PROJECT_NOT_FOUND
ProjectDataError                ValueError                         422   INVALID_PROJECT_DATA
BatchInputError                 ValueError                         422   INVALID_BATCH_INPUT
OutputMismatchError             ValueError                         409   OUTPUT_MISMATCH
OutputInUseError                RuntimeError                       409   OUTPUT_IN_USE
ModelLoadError                  RuntimeError                       500   MODEL_LOAD_FAILED
EvaluationInputError            ValueError                         422   INVALID_EVALUATION_INPUT
==============================  =================================  ====  ===========================

The codes are stable: a client may branch on them. The errors of batch jobs, training data
and evaluation do not end requests today; their status says whose fault they are all the
same (422: the caller's input, 409: a conflict with another job or earlier results).
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

from datamint_core._messages import model_failure_message, shorten

#: The error code of a failure that is not a :class:`DatamintError`: the model's own.
MODEL_ERROR = "MODEL_ERROR"


class DatamintError(Exception):
    """The base of every datamint error: catch it to catch them all."""

    http_status: ClassVar[int] = 500
    error_code: ClassVar[str] = "INTERNAL_ERROR"


# -- the request: what a client sent --------------------------------------------------------


class InvalidRequestError(DatamintError, ValueError):
    """A request the model cannot serve as asked: an unknown mode, a missing or unexpected
    param, or the wrong kind of resource for the mode. The caller's fault, never the model's:
    a model may raise it itself to refuse an input.
    """

    http_status = 422
    error_code = "INVALID_PARAMETER_VALUE"


class MalformedRequestError(InvalidRequestError):
    """A request whose envelope cannot be read: not JSON, an unknown envelope, nested too
    deep, a missing or stray multipart part, a ``path`` that is not a string."""

    http_status = 400
    error_code = "MALFORMED_REQUEST"


class UnsupportedModeError(InvalidRequestError, NotImplementedError):
    """The model serves neither the requested mode nor a ``predict_default``."""

    error_code = "UNSUPPORTED_MODE"


class PromptError(InvalidRequestError):
    """A prompt that cannot be used: malformed, outside the resource, a label or kind the
    model does not take, too many. The client's fault."""


class PathNotAllowedError(DatamintError, PermissionError):
    """A request names a local file outside the directories the server may read
    (``--allow-path-dir``, ``DATAMINT_SERVE_ALLOW_PATH_DIRS``)."""

    http_status = 403
    error_code = "PATH_NOT_ALLOWED"


class ResourceError(DatamintError, ValueError):
    """A resource could not be built or its pixel data could not be read."""

    http_status = 422
    error_code = "INVALID_RESOURCE"


class InputTooLargeError(DatamintError, ValueError):
    """An input over one of the limits: too many decoded bytes, slices or frames."""

    http_status = 413
    error_code = "INPUT_TOO_LARGE"


class RequestDeadlineExceeded(DatamintError, TimeoutError):
    """The request's deadline passed; the work stopped at a slice, frame or resource
    boundary."""

    http_status = 504
    error_code = "REQUEST_TIMEOUT"


# -- the model's results --------------------------------------------------------------------


class ResultShapeError(DatamintError, ValueError):
    """A handler did not return one list of annotations per input (the model's fault)."""

    error_code = MODEL_ERROR


class PatchResultError(DatamintError, ValueError):
    """A patch handler returned something other than scores or labels for its patches."""

    error_code = MODEL_ERROR


# -- the artifact cache and linked models ---------------------------------------------------


class CacheError(DatamintError, RuntimeError):
    """The artifact cache cannot serve an entry."""

    error_code = "CACHE_ERROR"


class CorruptedCacheEntryError(CacheError, OSError):
    """A cached entry no longer matches its manifest (a changed, missing or added file, a
    symbolic link), or its manifest is unreadable or names a path outside the entry."""

    error_code = "CORRUPTED_CACHE_ENTRY"


class CacheNotWritableError(CacheError, PermissionError):
    """The cache directory cannot be written: a download, a removal or a lock needs it."""

    error_code = "CACHE_NOT_WRITABLE"


class LinkedModelError(DatamintError, RuntimeError):
    """A linked model cannot be found or loaded."""

    error_code = "LINKED_MODEL_ERROR"


class LinkedModelNotFoundError(LinkedModelError, LookupError):
    """The registry (or the offline cache) does not have the linked model."""

    error_code = "LINKED_MODEL_NOT_FOUND"


class TrackingServerUnreachableError(LinkedModelError, ConnectionError):
    """The tracking server could not be reached to resolve or download a linked model."""

    http_status = 503
    error_code = "TRACKING_SERVER_UNREACHABLE"


# -- the Datamint platform ------------------------------------------------------------------


class PlatformConfigError(DatamintError, ValueError):
    """A Datamint setting is missing or unsafe; the message names the setting and the fix."""

    error_code = "PLATFORM_CONFIG_INVALID"


class PlatformAuthError(DatamintError, PermissionError):
    """The platform rejected the API key (HTTP 401 or 403)."""

    http_status = 502
    error_code = "PLATFORM_AUTH_FAILED"


class PlatformUnreachableError(DatamintError, ConnectionError):
    """The platform did not answer (connection refused, DNS failure, timeout)."""

    http_status = 503
    error_code = "PLATFORM_UNREACHABLE"


class PlatformRequestError(DatamintError, RuntimeError):
    """The platform answered a request with an unexpected error status."""

    http_status = 502
    error_code = "PLATFORM_REQUEST_FAILED"


class ProjectNotFoundError(DatamintError, LookupError):
    """No project with that name or id is visible with the configured key."""

    error_code = "PROJECT_NOT_FOUND"


class ProjectDataError(DatamintError, ValueError):
    """A project's training data cannot be read; the message names the file and the fix."""

    http_status = 422
    error_code = "INVALID_PROJECT_DATA"


# -- batch jobs and evaluation --------------------------------------------------------------


class BatchInputError(DatamintError, ValueError):
    """The batch input cannot be listed: missing, an unknown table format, bad columns."""

    http_status = 422
    error_code = "INVALID_BATCH_INPUT"


class OutputMismatchError(DatamintError, ValueError):
    """The output directory holds results of another model or other params."""

    http_status = 409
    error_code = "OUTPUT_MISMATCH"


class OutputInUseError(DatamintError, RuntimeError):
    """Another batch job is writing into the output directory right now."""

    http_status = 409
    error_code = "OUTPUT_IN_USE"


class ModelLoadError(DatamintError, RuntimeError):
    """A batch worker could not load the model; the job stops (no row can succeed)."""

    error_code = "MODEL_LOAD_FAILED"


class EvaluationInputError(DatamintError, ValueError):
    """The evaluation's inputs cannot be used: missing, unmatched, or with bad labels."""

    http_status = 422
    error_code = "INVALID_EVALUATION_INPUT"


# -- the one mapping ------------------------------------------------------------------------


class HttpAnswer(NamedTuple):
    """What a server answers for an error: status, error code and message."""

    status: int
    error_code: str
    message: str

    @property
    def is_client_error(self) -> bool:
        """The request is at fault (a 4xx)."""
        return 400 <= self.status < 500


def http_answer(error: BaseException) -> HttpAnswer:
    """The answer every server gives for ``error`` raised while serving a request.

    A :class:`DatamintError` is answered with its own status and code; anything else is the
    model's own failure (500 ``MODEL_ERROR``). A client error's message is the error's own;
    a server error's names only its type and message, with server-side paths hidden. Either
    is bounded (:func:`datamint_core._messages.shorten`).
    """
    if isinstance(error, DatamintError):
        status, code = error.http_status, error.error_code
    else:
        status, code = 500, MODEL_ERROR
    if 400 <= status < 500:
        return HttpAnswer(status, code, shorten(str(error) or type(error).__name__))
    return HttpAnswer(status, code, model_failure_message(error))


def public_errors() -> list[type[DatamintError]]:
    """Every error class of this module (:class:`DatamintError` and its subclasses)."""
    return [value for value in globals().values()
            if isinstance(value, type) and issubclass(value, DatamintError)]


__all__ = [
    "MODEL_ERROR",
    *(error.__name__ for error in public_errors()),
    "HttpAnswer",
    "http_answer",
]
