"""The ``datamint`` MLflow flavor: save, log and load Datamint models.

A saved model is an ordinary MLflow model directory with two flavors:

- ``python_function``, so ``mlflow.pyfunc.load_model(uri).predict(...)`` and
  ``mlflow models serve`` work with no datamint code of the caller's; its predictions are
  JSON-ready annotation dicts, wherever it runs (one JSON string per input only when the
  caller asks with the ``result_format="json"`` param, as ``spark_udf`` callers do);
- ``datamint``, the block the Datamint platform reads::

      datamint:
        datamint_version: 0.1.0
        task_type: volume_segmentation
        supported_modes: [default, image, slice, volume]
        mode_params: {slice: {params: [slice_index, axis], required: [slice_index]}}
                                                    # (modes not listed take no params)
        model_settings: {need_gpu: false}
        linked_models: {detector: {uri: "models:/det@prod", resolved_uri: "models:/det/3", ...}}
        linked_models_bundled: false
        annotation_specs: [{identifier: tumour, type: segmentation}]
        model_class: my_project.models.TumourSegmenter

Models are saved either as a pickled instance or from code
(``save_model(python_model="model.py", ...)``, MLflow's models-from-code), which loads with
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``.

This module keeps MLflow's flavor order (requirements, ``save_model``, ``log_model``,
``load_model``, ``_load_pyfunc``), which is why saving, its checks and loading sit together
in a little over 500 lines; what the loaded pyfunc does at ``predict`` is in
:mod:`datamint_core._pyfunc`.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelInputExample, ModelSignature
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
)
from mlflow.types import ParamSchema, ParamSpec

from datamint_core import _env, _loader, _mlflow_internals, _requirements, _wheel
from datamint_core._mlmodel import read_flavors, write_mlmodel
from datamint_core._pyfunc import RESULT_FORMAT_PARAM, _DatamintPyfuncModel
from datamint_core.annotations import AnnotationSpec
from datamint_core.enums import PredictionMode, TaskType
from datamint_core.linked_models import (
    BUNDLE_ARTIFACT,
    LINKED_MODELS_CONFIG_KEY,
    held_model_dir,
    pin,
    stage_bundle,
)
from datamint_core.model import BaseDatamintModel, as_datamint_model
from datamint_core.version import __version__

_logger = logging.getLogger(__name__)

FLAVOR_NAME = "datamint"
#: MLflow param types of the mode params this library knows; other params travel as strings.
_PARAM_TYPES = {
    "slice_index": "long",
    "frame_index": "long",
    "start_index": "long",
    "end_index": "long",
    "start_frame": "long",
    "end_frame": "long",
    "confidence_threshold": "double",
    # The sliding window of a patch handler's volume mode. MLflow's params are one type each:
    # through mlflow.pyfunc roi_size, overlap and sigma_scale are one number for all three
    # axes; datamint's own predict and server take [d, h, w] lists as well.
    "roi_size": "long",
    "overlap": "double",
    "sw_batch_size": "long",
    "sigma_scale": "double",
    "padding_value": "double",
    "threshold": "double",
}


def get_default_pip_requirements(
    model: BaseDatamintModel | None = None, from_code: bool = False
) -> list[str]:
    """Return the minimal requirements of a saved Datamint model, pinned to the versions in use.

    ``datamint`` itself is the wheel bundled in the model directory (``./wheels/...``): on
    the public index ``datamint`` is another project. ``save_model`` adds to these every
    distribution the model's pickle or code needs.

    Args:
        model: the model being saved; an extra's model class (``[torch]``) names its extra
            and what it needs through ``_pip_requirements()``.
        from_code: the model is saved from code, so loading it needs no cloudpickle.
    """
    own = model._pip_requirements() if model is not None else [f"datamint=={__version__}"]
    return _requirements.with_bundled_datamint(own) + _requirements.base_requirements(from_code)


def save_model(
    datamint_model: Any = None,
    path: str | os.PathLike[str] | None = None,
    task_type: TaskType | str | None = None,
    supported_modes: list[str] | None = None,
    data_path: str | None = None,
    code_paths: list[str] | None = None,
    infer_code_paths: bool = False,
    conda_env: Any = None,
    mlflow_model: Model | None = None,
    artifacts: dict[str, str] | None = None,
    signature: ModelSignature | None = None,
    input_example: ModelInputExample | None = None,
    pip_requirements: list[str] | str | None = None,
    extra_pip_requirements: list[str] | str | None = None,
    metadata: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
    streamable: bool | None = None,
    *,
    annotation_specs: list[AnnotationSpec | dict[str, Any]] | None = None,
    python_model: Any = None,
    bundle_linked_models: bool = False,
    weights_from: BaseDatamintModel | None = None,
    **kwargs: Any,
) -> None:
    """Save a Datamint model to a local directory.

    The parameters up to ``streamable`` take the seed's positional order (that of
    ``datamint.mlflow``'s ``save_model``); every parameter this project adds is keyword-only.

    Args:
        datamint_model: a :class:`BaseDatamintModel`, any object with ``predict_*`` methods
            (wrapped for you), or the path of a ``.py`` file that calls
            ``mlflow.models.set_model(...)`` with a Datamint model (models from code).
        path: the directory to create; it must not exist or be empty.
        task_type: overrides the model's class-level ``task_type``; restored at load.
        supported_modes: the modes to advertise; each must be one the model serves.
            Defaults to all of them.
        annotation_specs: what the model returns; overrides the class-level specs and is
            restored at load.
        data_path: a file or directory bundled as the artifact ``data``.
        python_model: same as ``datamint_model``, under MLflow's name for it.
        bundle_linked_models: copy every linked model into the saved model, so that it loads
            with no tracking server and no network.
        weights_from: for a model saved from code, a trained instance of the same class whose
            state (torch weights, with the ``[torch]`` extra) is saved in place of the state
            of the instance the code file builds.
        signature: defaults to a params-only signature declaring ``mode``,
            ``confidence_threshold`` and every mode param, so ``params`` reach the model
            through ``mlflow.pyfunc``.
        input_example: defaults to a small blank resource of the kind the model serves, with
            ``{"mode": "default"}`` (see :mod:`datamint_core.platform.input_example`).
        pip_requirements, extra_pip_requirements, conda_env: as in ``mlflow.pyfunc``. By
            default: :func:`get_default_pip_requirements` plus every distribution the model's
            pickle, code file, ``code_paths`` and class module import, pinned (found without
            loading the model in a subprocess). A ``datamint`` line in ``pip_requirements``
            is pointed at the bundled wheel.
        Other arguments: as in :func:`mlflow.pyfunc.save_model`.

    Raises:
        MlflowException: ``INVALID_PARAMETER_VALUE`` for a bad argument; the message names the
            value and what is accepted.
    """
    if path is None:
        raise MlflowException("save_model needs a target `path`.", INVALID_PARAMETER_VALUE)
    source = _one_model_argument(datamint_model, python_model)
    code_path = _code_path(source)
    model = _load_code_model(code_path, model_config) if code_path else _as_model(source)
    for prepared in {id(m): m for m in (model, weights_from) if m is not None}.values():
        prepared._prepare_for_inference()  # save what a loaded model serves (torch: eval)
    if weights_from is not None and type(weights_from).__qualname__ != type(model).__qualname__:
        raise MlflowException(
            f"weights_from is a {type(weights_from).__name__} but the model is a "
            f"{type(model).__name__}; give a trained instance of the model's own class.",
            INVALID_PARAMETER_VALUE,
        )

    links = {
        key: pin(key, uri, flavor=flavor) for key, (uri, flavor) in model._linked_uris().items()
    }
    block = _flavor_block(model, task_type, supported_modes, annotation_specs)
    block["linked_models"] = {key: link.to_dict() for key, link in links.items()}
    block["linked_models_bundled"] = bool(bundle_linked_models and links)
    # The datamint block joins the MLmodel after MLflow has written it: MLflow dumps MLmodel
    # twice with the pure-Python YAML emitter, whose time grows with the file.
    mlflow_model = mlflow_model or Model()

    # MLflow lets load-time model_config override only keys saved with the model, so the
    # device key is always saved: load_model(device=...) and MLFLOW_PYFUNC_INFERENCE_CONFIG
    # can then choose it.
    model_config = {"device": None, **(model_config or {})}
    if links:
        model_config[LINKED_MODELS_CONFIG_KEY] = block["linked_models"]
    if data_path is not None:
        artifacts = {**(artifacts or {}), "data": os.fspath(data_path)}
    if input_example is None:
        from datamint_core.input_example import default_input_example

        input_example = default_input_example(block["supported_modes"])
    if signature is None:
        signature = ModelSignature(params=_params_schema(block["mode_params"]))
    elif signature.params is None:
        signature.params = _params_schema(block["mode_params"])
    if pip_requirements is None and conda_env is None:
        extra = (
            [extra_pip_requirements]
            if isinstance(extra_pip_requirements, str)
            else (list(extra_pip_requirements or []))
        )
        pip_requirements = _requirements.model_requirements(
            model, model._pip_requirements(), code_path=code_path, code_paths=code_paths or ()
        )
        pip_requirements = _requirements.with_extra(pip_requirements, extra)
        extra_pip_requirements = None
    elif isinstance(pip_requirements, list):
        pip_requirements = _requirements.with_bundled_datamint(pip_requirements)

    # Created only by what writes into it (torch weights, bundled links): most saves need none.
    staging = Path(tempfile.gettempdir(), f"datamint-bundle-{uuid.uuid4().hex}")
    try:
        artifacts = {**(artifacts or {}), **(weights_from or model)._save_artifacts(staging)}
        if bundle_linked_models and links:
            artifacts[BUNDLE_ARTIFACT] = os.fspath(stage_bundle(links, staging))
        with _env.mlflow_progress_bar_only_on_a_terminal():
            mlflow.pyfunc.save_model(
                path=os.fspath(path),
                python_model=os.fspath(code_path) if code_path else model,
                artifacts=artifacts or None,
                code_paths=code_paths,
                infer_code_paths=infer_code_paths,
                conda_env=conda_env,
                mlflow_model=mlflow_model,
                signature=signature,
                input_example=input_example,
                pip_requirements=pip_requirements,
                extra_pip_requirements=extra_pip_requirements,
                metadata=metadata,
                model_config=model_config,
                streamable=streamable,
                **kwargs,
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # Route pyfunc loading through this module so that predictions come back JSON-ready.
    mlflow_model.flavors[mlflow.pyfunc.FLAVOR_NAME][mlflow.pyfunc.MAIN] = __name__
    mlflow_model.add_flavor(FLAVOR_NAME, **block)
    write_mlmodel(mlflow_model, path)
    _wheel.bundle_into(path)


def log_model(
    datamint_model: Any = None,
    task_type: TaskType | str | None = None,
    supported_modes: list[str] | None = None,
    name: str = "datamint_model",
    data_path: str | None = None,
    code_paths: list[str] | None = None,
    infer_code_paths: bool = False,
    artifacts: dict[str, str] | None = None,
    registered_model_name: str | None = None,
    signature: ModelSignature | None = None,
    input_example: ModelInputExample | None = None,
    pip_requirements: list[str] | str | None = None,
    extra_pip_requirements: list[str] | str | None = None,
    metadata: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
    *,
    bundle_linked_models: bool = False,
    weights_from: BaseDatamintModel | None = None,
    **kwargs: Any,
) -> Any:
    """Log a Datamint model to the active run (starting one if needed).

    Takes the arguments of :func:`save_model`, plus ``name`` (the model's name in the run)
    and ``registered_model_name`` (register it as a new version of that model). The
    parameters up to ``model_config`` take the seed's positional order (that of
    ``datamint.mlflow``'s ``log_model``); the rest are keyword-only.

    Returns:
        MLflow's ``ModelInfo`` (``model_uri``, ``registered_model_version``, ...).
    """
    return Model.log(
        artifact_path=None,
        name=name,
        flavor=_this_module(),
        datamint_model=datamint_model,
        task_type=task_type,
        supported_modes=supported_modes,
        data_path=data_path,
        code_paths=code_paths,
        infer_code_paths=infer_code_paths,
        artifacts=artifacts,
        registered_model_name=registered_model_name,
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements,
        extra_pip_requirements=extra_pip_requirements,
        metadata=metadata,
        model_config=model_config,
        bundle_linked_models=bundle_linked_models,
        weights_from=weights_from,
        **kwargs,
    )


def load_model(
    model_uri: str, device: str | None = None, dst_path: str | None = None
) -> BaseDatamintModel:
    """Load a Datamint model, ready to predict.

    Args:
        model_uri: ``models:/name/1``, ``models:/name@alias``, ``runs:/<id>/name``, a local
            path, or any URI MLflow resolves.
        device: the inference device (``cpu``, ``cuda:0``); beats
            ``MLFLOW_DEFAULT_PREDICTION_DEVICE`` and hardware detection.
        dst_path: where to download the model. By default ``models:/`` and ``runs:/``
            models go through the artifact cache (as linked models do: a second load
            downloads nothing, ``DATAMINT_OFFLINE=true`` needs no server) and local
            directories are used in place.

    Raises:
        MlflowException: the model has no ``datamint`` flavor, or its directory is corrupted.
    """
    if dst_path is not None:
        local_path = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dst_path)
        return _load_from_dir(local_path, model_uri, device)
    # A cached model stays in place while it loads, whoever clears the cache meanwhile.
    with held_model_dir(model_uri) as local_path:
        return _load_from_dir(local_path, model_uri, device)


def _load_from_dir(local_path: str, model_uri: str, device: str | None) -> BaseDatamintModel:
    # What mlflow.pyfunc.load_model does, from one parse of MLmodel (it parses it 3 times).
    flavors = read_flavors(local_path)
    block = require_datamint_flavor(flavors, model_uri)
    pyfunc_conf = flavors.get(mlflow.pyfunc.FLAVOR_NAME) or {}
    config = _loader.prepare_environment(
        local_path, pyfunc_conf, {"device": device} if device else None
    )
    return _load_datamint(local_path, pyfunc_conf, block, config).python_model


def require_datamint_flavor(flavors: dict[str, Any], model_uri: str) -> dict[str, Any]:
    """Return the ``datamint`` block among ``flavors``.

    Raises:
        MlflowException: ``RESOURCE_DOES_NOT_EXIST``, naming the flavors the model has.
    """
    if FLAVOR_NAME not in flavors:
        raise MlflowException(
            f"The model at {model_uri!r} has no {FLAVOR_NAME!r} flavor "
            f"(flavors: {sorted(flavors)}). Load it with mlflow.pyfunc.load_model, or save it "
            "with datamint_core.save_model.",
            RESOURCE_DOES_NOT_EXIST,
        )
    return dict(flavors[FLAVOR_NAME])


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> _DatamintPyfuncModel:
    """Load the ``python_function`` flavor (MLflow's loader-module contract)."""
    flavors = read_flavors(path)
    pyfunc_conf = flavors.get(mlflow.pyfunc.FLAVOR_NAME) or {}
    return _load_datamint(path, pyfunc_conf, flavors.get(FLAVOR_NAME) or {}, model_config)


def _load_datamint(
    path: str,
    pyfunc_conf: dict[str, Any],
    block: dict[str, Any],
    model_config: dict[str, Any] | None,
) -> _DatamintPyfuncModel:
    try:
        with _requirements.report_missing_dependencies(path):
            model, context = _loader.load_python_model(path, pyfunc_conf, model_config)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as error:
        raise MlflowException(
            f"Cannot load the Datamint model in {path!r}: {type(error).__name__}: {error}. "
            "The model directory is incomplete or corrupted, or the code it needs is not "
            "importable here; download or save it again."
        ) from error
    if not isinstance(model, BaseDatamintModel):
        raise MlflowException(
            f"The model in {path!r} is a {type(model).__name__}, not a Datamint model; its "
            "MLmodel file claims the datamint flavor but the python model does not match."
        )
    _restore_saved_metadata(model, block)
    return _DatamintPyfuncModel(model, context)


def _restore_saved_metadata(model: BaseDatamintModel, conf: dict[str, Any]) -> None:
    saved_version = conf.get("datamint_version")
    if saved_version != __version__:
        _logger.warning(
            "This model was saved with datamint %s and is loaded with datamint %s; "
            "if it misbehaves, install the version it was saved with.",
            saved_version,
            __version__,
        )
    if conf.get("task_type"):
        model.task_type = TaskType.parse(conf["task_type"])  # type: ignore[misc]
    if conf.get("annotation_specs") is not None:
        model.annotation_specs = [  # type: ignore[misc]
            AnnotationSpec.from_dict(spec) for spec in conf["annotation_specs"]
        ]


def _flavor_block(
    model: BaseDatamintModel,
    task_type: TaskType | str | None,
    supported_modes: list[str] | None,
    annotation_specs: list[AnnotationSpec | dict[str, Any]] | None,
) -> dict[str, Any]:
    available = model.get_supported_modes()
    if supported_modes is None:
        modes = available
    else:
        modes = [_invalid_to_mlflow(PredictionMode.parse, mode).value for mode in supported_modes]
        missing = [mode for mode in modes if mode not in available]
        if missing:
            raise MlflowException(
                f"supported_modes names mode(s) {missing} that {type(model).__name__} does not "
                f"serve; it serves {available}.",
                INVALID_PARAMETER_VALUE,
            )
    declared_task = task_type if task_type is not None else model.task_type
    task = _invalid_to_mlflow(TaskType.parse, declared_task) if declared_task is not None else None
    specs = annotation_specs if annotation_specs is not None else model.annotation_specs
    mode_params = model.router.mode_params()
    interactive = any("prompts" in mode_params[mode] for mode in modes)
    return {
        "datamint_version": __version__,
        "task_type": task.value if task else None,
        "supported_modes": modes,
        # Only modes that take params: the block is parsed on every load, so keep it lean.
        "mode_params": {mode: mode_params[mode] for mode in modes if mode_params[mode]["params"]},
        # Interactive models only: a client builds its prompt tools from these and from the
        # prompt kinds in mode_params.
        **(
            {"interactive": True, "prompt_labels": model.router.prompt_labels()}
            if interactive
            else {}
        ),
        "model_settings": model.settings.to_dict(),
        "annotation_specs": [_spec(spec).to_dict() for spec in specs]
        if specs is not None
        else None,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
    }


def _params_schema(mode_params: dict[str, dict[str, list[str]]]) -> ParamSchema:
    names = sorted({name for info in mode_params.values() for name in info["params"]})
    specs = [
        ParamSpec("mode", "string", PredictionMode.DEFAULT.value),
        ParamSpec("confidence_threshold", "double", None),
        ParamSpec("model_name", "string", None),
        ParamSpec("log_predictions", "boolean", None),
        ParamSpec(RESULT_FORMAT_PARAM, "string", None),
    ]
    specs += [ParamSpec(name, _PARAM_TYPES.get(name, "string"), None) for name in names]
    return ParamSchema(specs)


def _one_model_argument(datamint_model: Any, python_model: Any) -> Any:
    if (datamint_model is None) == (python_model is None):
        raise MlflowException(
            "Give the model to save exactly once: as `datamint_model` (an object) or "
            "`python_model` (an object or the path of a .py file that calls "
            "mlflow.models.set_model).",
            INVALID_PARAMETER_VALUE,
        )
    return datamint_model if datamint_model is not None else python_model


def _code_path(source: Any) -> Path | None:
    if not isinstance(source, (str, os.PathLike)):
        return None
    code_path = Path(source)
    if code_path.suffix != ".py" or not code_path.is_file():
        raise MlflowException(
            f"python_model={os.fspath(source)!r} is not an existing .py file; pass a model "
            "object, or the path of a Python file that calls mlflow.models.set_model(model).",
            INVALID_PARAMETER_VALUE,
        )
    return code_path


def _load_code_model(code_path: Path, model_config: dict[str, Any] | None) -> BaseDatamintModel:
    model = _mlflow_internals.load_model_from_code(os.fspath(code_path), model_config)
    if not isinstance(model, BaseDatamintModel):
        raise MlflowException(
            f"{os.fspath(code_path)!r} set a {type(model).__name__} as its model; a Datamint "
            "model file must call mlflow.models.set_model() with a BaseDatamintModel.",
            INVALID_PARAMETER_VALUE,
        )
    return model


def _as_model(source: Any) -> BaseDatamintModel:
    try:
        return as_datamint_model(source)
    except TypeError as error:
        raise MlflowException(str(error), INVALID_PARAMETER_VALUE) from None


def _spec(spec: AnnotationSpec | dict[str, Any]) -> AnnotationSpec:
    if isinstance(spec, AnnotationSpec):
        return spec
    return _invalid_to_mlflow(AnnotationSpec.from_dict, spec)


def _invalid_to_mlflow(parse: Any, value: Any) -> Any:
    try:
        return parse(value)
    except (ValueError, TypeError) as error:
        raise MlflowException(str(error), INVALID_PARAMETER_VALUE) from None


def _this_module() -> Any:
    return sys.modules[__name__]


__all__ = ["FLAVOR_NAME", "get_default_pip_requirements", "load_model", "log_model", "save_model"]
