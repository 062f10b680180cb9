"""Every use of MLflow's private internals, in one place (MLflow integration layer).

datamint loads Datamint models faster than ``mlflow.pyfunc.load_model`` by doing what it
does from one parse of MLmodel (:mod:`datamint_core._loader`), and classifies the errors of
MLflow's REST client. Both need MLflow functions and behaviour that are not public API: an
underscore name, a module of ``mlflow.*.utils``, a private attribute. They are wrapped here
and nowhere else, each with a docstring naming the MLflow function it wraps and what datamint
relies on, and each with a test of its own in ``tests/compat/test_mlflow_internals.py`` (a
real MLflow, a SQLite store) that fails when an MLflow release changes that behaviour.
``scripts/compat`` runs those tests against the newest MLflow release.

One private name lives elsewhere, as it must: :class:`datamint_core.model.BaseDatamintModel`
sets ``PythonModel``'s class attribute ``_skip_type_hint_validation`` in its class body (the
domain model cannot import this module, and MLflow reads the flag when the class is created);
its test is in the same file.

Where MLflow offers a public way, it is used instead, outside this module:
``mlflow.artifacts.download_artifacts`` (not ``_download_artifact_from_uri``),
``mlflow.get_tracking_uri``, ``mlflow.log_input``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PythonModelFiles:
    """Where a pyfunc ``PythonModel`` directory keeps its model, as its MLmodel says.

    Attributes:
        code_file: the model's code file (a model saved from code), or ``None``.
        pickle_file: the cloudpickled model (a model saved as an object), or ``None``.
        compression: how ``pickle_file`` is compressed (``None``, ``lzma``, ``bzip2``, ...).
        cloudpickle_version: the cloudpickle that pickled it, when recorded.
        artifacts: ``{name: local path}`` of the model's artifacts.
    """

    code_file: str | None
    pickle_file: str | None
    compression: str | None
    cloudpickle_version: str | None
    artifacts: dict[str, str]


def python_model_files(model_dir: str, pyfunc_conf: dict[str, Any]) -> PythonModelFiles:
    """Read the ``python_function`` block that ``mlflow.pyfunc.save_model`` writes for a
    ``PythonModel``.

    Wraps the keys of ``mlflow.pyfunc.model`` (``MODEL_CODE_PATH``, ``CONFIG_KEY_PYTHON_MODEL``,
    ``CONFIG_KEY_COMPRESSION``, ``CONFIG_KEY_CLOUDPICKLE_VERSION``, ``CONFIG_KEY_ARTIFACTS``
    and ``CONFIG_KEY_ARTIFACT_RELATIVE_PATH``), as its private loader
    ``_load_context_model_and_signature`` reads them. datamint relies on a model from code
    naming its file (kept at the top of the model directory) under ``MODEL_CODE_PATH``, a
    pickled one its pickle's path relative to the directory under ``CONFIG_KEY_PYTHON_MODEL``,
    and each artifact its path relative to the directory.
    """
    from mlflow.pyfunc.model import (
        CONFIG_KEY_ARTIFACT_RELATIVE_PATH,
        CONFIG_KEY_ARTIFACTS,
        CONFIG_KEY_CLOUDPICKLE_VERSION,
        CONFIG_KEY_COMPRESSION,
        CONFIG_KEY_PYTHON_MODEL,
        MODEL_CODE_PATH,
    )

    code = pyfunc_conf.get(MODEL_CODE_PATH)
    pickled = pyfunc_conf.get(CONFIG_KEY_PYTHON_MODEL)
    return PythonModelFiles(
        code_file=os.path.join(model_dir, os.path.basename(code)) if code else None,
        pickle_file=os.path.join(model_dir, pickled) if pickled and not code else None,
        compression=pyfunc_conf.get(CONFIG_KEY_COMPRESSION),
        cloudpickle_version=pyfunc_conf.get(CONFIG_KEY_CLOUDPICKLE_VERSION),
        artifacts={
            name: os.path.join(model_dir, info[CONFIG_KEY_ARTIFACT_RELATIVE_PATH])
            for name, info in (pyfunc_conf.get(CONFIG_KEY_ARTIFACTS) or {}).items()
        },
    )


def load_model_from_code(code_file: str, model_config: dict[str, Any] | None) -> Any:
    """Run a model file and return the model it set with ``mlflow.models.set_model``.

    Wraps ``mlflow.models.utils._load_model_code_path``. datamint relies on the file being
    run as a new module while ``model_config`` is what ``mlflow.models.ModelConfig`` reads,
    and on the object the file gave ``set_model`` being returned.
    """
    from mlflow.models.utils import _load_model_code_path

    return _load_model_code_path(code_file, model_config)


def unpickle_python_model(pickle_file: str, compression: str | None) -> Any:
    """Load a cloudpickled ``PythonModel`` as ``mlflow.pyfunc.save_model`` wrote it.

    Wraps ``mlflow.pyfunc.model._maybe_decompress_cloudpickle_load``. datamint relies on it
    reading the file written with ``compression`` (``None``: uncompressed) and returning the
    unpickled object, without calling ``load_context``.
    """
    from mlflow.pyfunc.model import _maybe_decompress_cloudpickle_load

    return _maybe_decompress_cloudpickle_load(pickle_file, compression)


def warn_if_python_version_differs(saved_version: str | None) -> None:
    """Log MLflow's warning when the model was saved with another Python (major.minor).

    Wraps ``mlflow.pyfunc._warn_potentially_incompatible_py_version_if_necessary``, as
    ``mlflow.pyfunc.load_model`` calls it. datamint relies on it only logging (a warning on
    the ``mlflow.pyfunc`` logger when the versions differ or none was saved), never raising.
    """
    from mlflow.pyfunc import _warn_potentially_incompatible_py_version_if_necessary

    _warn_potentially_incompatible_py_version_if_necessary(saved_version)


def add_code_paths_to_sys_path(model_dir: str, pyfunc_conf: dict[str, Any]) -> None:
    """Put the model's ``code_paths`` directory first on ``sys.path``.

    Wraps ``mlflow.utils.model_utils._add_code_from_conf_to_system_path(model_dir,
    pyfunc_conf, code_key="code")``, as ``mlflow.pyfunc.load_model`` calls it. datamint relies
    on the ``code`` key of the ``python_function`` block naming that directory (relative to
    the model directory), and on nothing being added when the model has no ``code_paths``.
    """
    from mlflow.utils.model_utils import _add_code_from_conf_to_system_path

    _add_code_from_conf_to_system_path(model_dir, pyfunc_conf, code_key="code")


def overridden_model_config(
    saved: dict[str, Any] | None, override: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The model config a load uses: the saved one, with keys it has overridden.

    Wraps ``mlflow.utils.model_utils._get_overridden_pyfunc_model_config``, as
    ``mlflow.pyfunc.load_model`` calls it. datamint relies on: the overrides are
    ``MLFLOW_PYFUNC_INFERENCE_CONFIG`` (JSON) then ``override``; only keys the saved config
    has are overridden (others are dropped with a warning); no override returns ``saved``.
    """
    from mlflow.utils.model_utils import _get_overridden_pyfunc_model_config

    return _get_overridden_pyfunc_model_config(saved, override, _logger)


def tracking_store(client: Any) -> Any:
    """The tracking store behind an ``MlflowClient`` (a plugin's own store class, for a
    plugin's URI scheme).

    Reads the private attribute ``MlflowClient._tracking_client.store``. datamint relies on
    it being the store instance registered for the client's tracking URI, so that the
    platform's experiment provider can call its store's own methods.
    """
    return client._tracking_client.store


def dataset_input(dataset: Any, context: str) -> Any:
    """The ``mlflow.entities.DatasetInput`` that logs an ``mlflow.data.Dataset`` as a run
    input with the context ``context`` (``training``, ``validation``, ``test``).

    Wraps the private method ``mlflow.data.dataset.Dataset._to_mlflow_entity`` and the tag
    name ``mlflow.utils.mlflow_tags.MLFLOW_DATASET_CONTEXT``, as ``mlflow.log_input`` uses
    them; ``MlflowClient.log_inputs`` (logging to a run that is not the active one) takes the
    input, and MLflow has no public way to build it. datamint relies on the entity carrying
    the dataset's name, digest, source type, source and schema, and on the run's input
    showing the context as ``mlflow.log_input(dataset, context=...)`` does.
    """
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    tag = InputTag(MLFLOW_DATASET_CONTEXT, context)
    return DatasetInput(dataset._to_mlflow_entity(), tags=[tag])


def http_status_of(error: Exception) -> int:
    """The HTTP status an ``MlflowException`` from MLflow's REST client was answered with.

    Wraps ``MlflowException.get_http_status_code`` for the errors of
    ``mlflow.utils.rest_utils.verify_rest_response``. datamint relies on that function giving
    the exception the error code of the answer: the one a JSON error body names
    (``UNAUTHENTICATED`` -> 401), else the one MLflow maps the HTTP status to
    (``get_error_code``: 401 and 403 survive the round trip), so that a refused key is told
    apart by status, never by the text of the message. Not an ``MlflowException``: 500.
    """
    from mlflow.exceptions import MlflowException

    return error.get_http_status_code() if isinstance(error, MlflowException) else 500


def in_mlflow_scoring_server() -> bool:
    """Whether this process is MLflow's scoring server (``mlflow models serve``).

    Reads MLflow's private variable ``mlflow.environment_variables.
    _MLFLOW_IS_IN_SERVING_ENVIRONMENT``, which ``mlflow.pyfunc.scoring_server.init`` sets to
    ``true`` in its process. datamint relies on it being set before the first request, so that
    the pyfunc wrapper applies the server limits to requests and to nothing else.
    """
    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT

    return bool(_MLFLOW_IS_IN_SERVING_ENVIRONMENT.get())


def is_unreachable_server_error(error: BaseException) -> bool:
    """Whether ``error``, raised by an MLflow client call, means the server did not answer.

    MLflow's REST client (``mlflow.utils.rest_utils.http_request``) raises an
    ``MlflowException`` for a failed request, raised inside its ``except`` (or ``from``)
    the network error of ``requests``/``urllib3``, which its message only quotes. datamint
    relies on that network error being in the ``__cause__``/``__context__`` chain, and
    classifies it by type: a connection error, a timeout, retries exhausted.
    """
    import requests
    import urllib3.exceptions

    unreachable = (
        ConnectionError,
        TimeoutError,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.RetryError,
        urllib3.exceptions.MaxRetryError,
        urllib3.exceptions.NewConnectionError,
        urllib3.exceptions.TimeoutError,
    )
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, unreachable):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
