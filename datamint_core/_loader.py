"""Loading a saved Datamint model with one parse of its MLmodel file.

``mlflow.pyfunc.load_model`` parses MLmodel with PyYAML's pure-Python loader three times per
load (``load_model``, the flavor configuration, the signature). A Datamint model needs none of
that: :func:`load_python_model` does what MLflow's ``PythonModel`` loader does (code paths on
``sys.path``, the pickle or the model's code file, artifacts, ``load_context``) from one
parse, with libyaml when it is installed.
"""

from __future__ import annotations

import logging
from typing import Any

from datamint_core import _mlflow_internals

_logger = logging.getLogger(__name__)

PYFUNC_FLAVOR = "python_function"


def load_python_model(
    model_dir: str, pyfunc_conf: dict[str, Any], model_config: dict[str, Any] | None
) -> tuple[Any, Any]:
    """Load the python model of a pyfunc ``PythonModel`` directory and call ``load_context``.

    Mirrors ``mlflow.pyfunc.model._load_context_model_and_signature``, signature excepted:
    models from code are run from their file, pickled ones are unpickled only when
    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` allows it.

    Returns:
        ``(python_model, context)``.
    """
    import cloudpickle
    from mlflow.environment_variables import MLFLOW_ALLOW_PICKLE_DESERIALIZATION
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import PythonModelContext

    files = _mlflow_internals.python_model_files(model_dir, pyfunc_conf)
    if files.code_file is not None:
        python_model = _mlflow_internals.load_model_from_code(files.code_file, model_config)
    else:
        if not MLFLOW_ALLOW_PICKLE_DESERIALIZATION.get():
            raise MlflowException(
                "Deserializing model using pickle is disallowed "
                f"(MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false), but the model in {model_dir!r} "
                "is pickled. Save it from code "
                "(save_model(python_model='model.py', ...)) to load it without unpickling, or "
                "set MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true."
            )
        saved_with = files.cloudpickle_version
        if saved_with is not None and saved_with != cloudpickle.__version__:
            _logger.warning(
                "The model was pickled with CloudPickle %s and is loaded with CloudPickle %s, "
                "which may be incompatible.",
                saved_with,
                cloudpickle.__version__,
            )
        if files.pickle_file is None:
            raise MlflowException(
                f"The MLmodel file in {model_dir!r} names no python model file; the model "
                "directory is incomplete or corrupted."
            )
        python_model = _mlflow_internals.unpickle_python_model(
            files.pickle_file, files.compression
        )
    context = PythonModelContext(artifacts=files.artifacts, model_config=model_config)
    python_model.load_context(context=context)
    return python_model, context


def prepare_environment(
    model_dir: str, pyfunc_conf: dict[str, Any], model_config: dict[str, Any] | None
) -> dict[str, Any] | None:
    """What ``mlflow.pyfunc.load_model`` does before it calls the loader module.

    Warns about requirements this environment does not satisfy and a different Python
    version (as MLflow does), puts the model's ``code_paths`` on ``sys.path`` and returns
    the model config: the saved one, overridden by ``model_config``.
    """
    from datamint_core._requirements import warn_requirement_mismatches

    warn_requirement_mismatches(model_dir)
    _mlflow_internals.warn_if_python_version_differs(pyfunc_conf.get("python_version"))
    _mlflow_internals.add_code_paths_to_sys_path(model_dir, pyfunc_conf)
    return _mlflow_internals.overridden_model_config(pyfunc_conf.get("config"), model_config)
