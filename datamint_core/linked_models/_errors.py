"""MLflow's errors said as the errors of linked models (:mod:`datamint_core.errors`).

MLflow's errors are classified by what they are, never by their text: a missing registry
object by its error code (``RESOURCE_DOES_NOT_EXIST``), an unreachable server by the type of
the network error MLflow's REST client raised it from.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from datamint_core import _mlflow_internals
from datamint_core.errors import (
    LinkedModelError,
    LinkedModelNotFoundError,
    TrackingServerUnreachableError,
)
from datamint_core.linked_models._uris import subject, subject_lower

#: ``MlflowException.error_code`` of a model, version or alias the registry does not have.
NOT_FOUND_CODE = ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


@contextlib.contextmanager
def registry_errors(key: str, uri: str) -> Iterator[None]:
    """MLflow's errors while asking the registry about ``uri``, said of the model ``key``:
    ``RESOURCE_DOES_NOT_EXIST`` is :class:`LinkedModelNotFoundError`, and see
    :func:`server_errors`."""
    with server_errors(key, uri):
        try:
            yield
        except MlflowException as error:
            if error.error_code != NOT_FOUND_CODE:
                raise
            raise LinkedModelNotFoundError(
                f"{subject(key)} ({uri!r}) does not exist on {registry_uri()}: {error.message}"
            ) from None


@contextlib.contextmanager
def server_errors(key: str, uri: str) -> Iterator[None]:
    """An error MLflow raised because the tracking server did not answer is
    :class:`TrackingServerUnreachableError`, saying what to do instead."""
    try:
        yield
    except LinkedModelError:
        raise
    except Exception as error:
        if not _mlflow_internals.is_unreachable_server_error(error):
            raise
        raise TrackingServerUnreachableError(
            f"Cannot reach the tracking server at {registry_uri()} for {subject_lower(key)} "
            f"({uri!r}): {type(error).__name__}. Start the server, or run offline "
            f"(DATAMINT_OFFLINE=true) with the model in the artifact cache, or save the parent "
            "with bundle_linked_models=True."
        ) from error


def registry_uri() -> str:
    """The registry URI MLflow uses now (as configured; no server is asked)."""
    import mlflow

    return mlflow.get_registry_uri()
