"""Loading a saved Datamint model with one parse of its MLmodel file.

``mlflow.pyfunc.load_model`` parses MLmodel with PyYAML's pure-Python loader three times per
load (``load_model``, the flavor configuration, the signature). A Datamint model needs none of
that: :func:`load_python_model` does what MLflow's ``PythonModel`` loader does (code paths on
``sys.path``, the pickle or the model's code file, artifacts, ``load_context``) from one
parse, with libyaml when it is installed.
"""

from __future__ import annotations

import logging
import os
from typing import Any

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
    from mlflow.models.utils import _load_model_code_path
    from mlflow.pyfunc.model import (
        CONFIG_KEY_ARTIFACT_RELATIVE_PATH,
        CONFIG_KEY_ARTIFACTS,
        CONFIG_KEY_CLOUDPICKLE_VERSION,
        CONFIG_KEY_COMPRESSION,
        CONFIG_KEY_PYTHON_MODEL,
        MODEL_CODE_PATH,
        PythonModelContext,
        _maybe_decompress_cloudpickle_load,
    )

    if MODEL_CODE_PATH in pyfunc_conf:
        code_file = os.path.join(model_dir, os.path.basename(pyfunc_conf[MODEL_CODE_PATH]))
        python_model = _load_model_code_path(code_file, model_config)
    else:
        if not MLFLOW_ALLOW_PICKLE_DESERIALIZATION.get():
            raise MlflowException(
                "Deserializing model using pickle is disallowed "
                f"(MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false), but the model in {model_dir!r} "
                "is pickled. Save it from code "
                "(save_model(python_model='model.py', ...)) to load it without unpickling, or "
                "set MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true."
            )
        saved_with = pyfunc_conf.get(CONFIG_KEY_CLOUDPICKLE_VERSION)
        if saved_with is not None and saved_with != cloudpickle.__version__:
            _logger.warning(
                "The model was pickled with CloudPickle %s and is loaded with CloudPickle %s, "
                "which may be incompatible.",
                saved_with,
                cloudpickle.__version__,
            )
        subpath = pyfunc_conf.get(CONFIG_KEY_PYTHON_MODEL)
        if subpath is None:
            raise MlflowException(
                f"The MLmodel file in {model_dir!r} names no python model file; the model "
                "directory is incomplete or corrupted."
            )
        python_model = _maybe_decompress_cloudpickle_load(
            os.path.join(model_dir, subpath), pyfunc_conf.get(CONFIG_KEY_COMPRESSION)
        )
    artifacts = {
        name: os.path.join(model_dir, info[CONFIG_KEY_ARTIFACT_RELATIVE_PATH])
        for name, info in (pyfunc_conf.get(CONFIG_KEY_ARTIFACTS) or {}).items()
    }
    context = PythonModelContext(artifacts=artifacts, model_config=model_config)
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
    from mlflow.pyfunc import _warn_potentially_incompatible_py_version_if_necessary
    from mlflow.utils.model_utils import (
        _add_code_from_conf_to_system_path,
        _get_overridden_pyfunc_model_config,
    )

    from datamint_core._requirements import warn_requirement_mismatches

    warn_requirement_mismatches(model_dir)
    _warn_potentially_incompatible_py_version_if_necessary(pyfunc_conf.get("python_version"))
    _add_code_from_conf_to_system_path(model_dir, pyfunc_conf, code_key="code")
    return _get_overridden_pyfunc_model_config(pyfunc_conf.get("config"), model_config, _logger)
