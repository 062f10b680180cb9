"""``BaseDatamintModel``: the prediction gateway every Datamint model builds on."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from mlflow.pyfunc import FLAVOR_NAME as PYFUNC_FLAVOR
from mlflow.pyfunc import PythonModel

from datamint_core import _env, _extensions
from datamint_core.annotations import Annotation, AnnotationSpec
from datamint_core.enums import PredictionMode, TaskType
from datamint_core.errors import InvalidRequestError
from datamint_core.resources import BaseResource
from datamint_core.routing import PredictionRouter
from datamint_core.settings import ModelSettings
from datamint_core.sliding_window import NumpyPatchArrays, PatchArrays
from datamint_core.version import __version__
from datamint_core.wire import as_resources

_logger = logging.getLogger(__name__)


class BaseDatamintModel(PythonModel):
    """Core prediction gateway: parse the input, route on ``params['mode']``, check the output.

    Subclasses implement :meth:`predict_default` and, optionally, other modes, either by
    name (``predict_slice``) or with :func:`~datamint_core.prediction_mode`. Modes they do
    not implement are bridged from those they do (see :mod:`datamint_core.routing`).

    Example::

        class Threshold(BaseDatamintModel):
            task_type = TaskType.IMAGE_SEGMENTATION

            def predict_image(self, model_input, **kwargs):
                return [[SegmentationAnnotation("bright", r.pixels > 0.5)] for r in model_input]

        Threshold().predict([VolumeResource(volume)], params={"mode": "volume"})

    Args:
        settings: deployment settings, as :class:`ModelSettings` or a dict of its fields.
        mlflow_models_uri: other MLflow models to load at serve time, as
            ``{"detector": "models:/lung-detector@prod"}``; reach them with
            :meth:`get_mlflow_models`. See :mod:`datamint_core.linked_models`.
    """

    #: Semantic task category; override in the class body.
    task_type: ClassVar[TaskType | None] = None
    #: What the model returns; override in the class body or give it to ``save_model``.
    annotation_specs: ClassVar[Sequence[AnnotationSpec] | None] = None

    # MLflow wraps ``predict`` to validate inputs against its type hints on every call (tens
    # of microseconds per resource); resources are parsed and checked here instead. A private
    # flag of MLflow's, pinned by tests/compat/test_mlflow_internals.py.
    _skip_type_hint_validation: ClassVar[bool] = True

    _settings: ModelSettings = ModelSettings()
    _inference_device: str | None = None
    _router: PredictionRouter | None = None
    _mlflow_models_uri: Mapping[str, str] = MappingProxyType({})
    _linked_models: dict[str, Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "predict" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} overrides predict(), which routes every request and must stay "
                "as it is; implement predict_default() or predict_<mode>() instead."
            )
        if cls.__dict__.get("task_type") is not None:
            cls.task_type = TaskType.parse(cls.task_type)  # type: ignore[arg-type]

    def __init__(
        self,
        settings: ModelSettings | dict[str, Any] | None = None,
        mlflow_models_uri: Mapping[str, str] | None = None,
    ) -> None:
        self._settings = ModelSettings.coerce(settings)
        self._mlflow_models_uri = _extensions.linked_model_support().check_uris(mlflow_models_uri)

    # -- what the model is ---------------------------------------------------------------

    @property
    def settings(self) -> ModelSettings:
        """Deployment settings saved with the model."""
        return self._settings

    @property
    def router(self) -> PredictionRouter:
        """The mode registry, built on first use (and again after unpickling)."""
        if self._router is None:
            self._router = self._build_router()
        return self._router

    def _build_router(self) -> PredictionRouter:
        return PredictionRouter(self, BaseDatamintModel)

    def get_supported_modes(self) -> list[str]:
        """Return the prediction modes this model serves, bridged ones included."""
        return self.router.supported_modes()

    @property
    def inference_device(self) -> str:
        """The device inference runs on.

        Decided in this order: the ``device`` of the model config given at load time, the
        ``MLFLOW_DEFAULT_PREDICTION_DEVICE`` environment variable, hardware detection (which
        the ``[torch]`` extra supplies), then ``cpu``.
        """
        if self._inference_device is not None:
            return self._inference_device
        return _env.MLFLOW_DEFAULT_PREDICTION_DEVICE.get() or _extensions.detect_device()

    @property
    def mlflow_models_uri(self) -> dict[str, str]:
        """The linked models, as ``{name: uri}`` (the URIs as given)."""
        return dict(self._mlflow_models_uri)

    def get_mlflow_models(self) -> dict[str, Any]:
        """The loaded linked models (``mlflow.pyfunc`` models), by name.

        Loaded in :meth:`load_context` when the model is loaded; on a model built in this
        process, loaded on first call.
        """
        return self._linked_models_of_flavor(PYFUNC_FLAVOR)

    def _linked_models_of_flavor(self, flavor: str) -> dict[str, Any]:
        if self._linked_models is None:
            self._linked_models = self._load_linked_models(context=None)
        uris = self._linked_uris()
        return {k: m for k, m in self._linked_models.items() if uris[k][1] == flavor}

    # -- hooks the extras fill (the core never imports them) ------------------------------

    def _linked_uris(self) -> dict[str, tuple[str, str]]:
        """Every linked model as ``{key: (uri, flavor)}``."""
        return {key: (uri, PYFUNC_FLAVOR) for key, uri in self._mlflow_models_uri.items()}

    def _linked_model_loaders(self) -> dict[str, Any]:
        """Loaders for linked flavors beyond ``python_function``: ``{flavor: loader}``."""
        return {}

    def _checked_device(self, device: str) -> str:
        """The device to use when ``device`` was asked for (extras check the hardware)."""
        return device

    def _inference_context(self) -> contextlib.AbstractContextManager[Any]:
        """What every prediction runs inside (the torch extra: ``torch.inference_mode``)."""
        return contextlib.nullcontext()

    def _patch_arrays(self) -> PatchArrays:
        """Where the sliding window cuts, blends and reduces patches (the torch extra: torch
        tensors on the inference device); here numpy, on the CPU."""
        return NumpyPatchArrays()

    def _save_artifacts(self, staging_dir: Path) -> dict[str, str]:
        """Write what must travel beside the python model; return ``{name: path}``."""
        return {}

    def _prepare_for_inference(self) -> None:
        """Put the model in the state it predicts in once loaded (the torch extra: eval mode).

        Called before a save and before ``validate_model``'s smoke prediction, so that what
        is validated in this process is what a loaded model serves.
        """

    def load_context(self, context: Any) -> None:
        """Decide the inference device, then load the linked models.

        Subclasses that load more call ``super().load_context(context)`` first, so that
        :attr:`inference_device` is decided before anything else is loaded.
        """
        config = getattr(context, "model_config", None) or {}
        config = config if isinstance(config, dict) else {}
        self._inference_device = self._checked_device(config.get("device") or self.inference_device)
        if self.settings.need_gpu and self._inference_device == "cpu":
            warnings.warn(
                f"{type(self).__name__} was saved with need_gpu=True but runs on the CPU here: "
                "predictions will be correct but slow. Set MLFLOW_DEFAULT_PREDICTION_DEVICE or "
                "model_config={'device': 'cuda'} on a machine with a GPU.",
                UserWarning,
                stacklevel=2,
            )
        if self._linked_uris():
            self._linked_models = self._load_linked_models(context)

    def _load_linked_models(self, context: Any) -> dict[str, Any]:
        """Load the linked models through the hook the MLflow integration layer registers
        (:mod:`datamint_core.linked_models`): from the pinned records and bundle saved with
        the model when ``context`` is a load context, pinned now when it is ``None``."""
        return _extensions.linked_model_support().load(
            self._linked_uris(),
            context=context,
            device=self.inference_device,
            loaders=self._linked_model_loaders(),
        )

    # -- prediction ------------------------------------------------------------------------

    # ``model_input`` has no type hint on purpose: MLflow reads predict's hints to infer a
    # signature and validate every call, and none of its schema types fits a resource.
    def predict(self, model_input, params: dict[str, Any] | None = None) -> list[list[Annotation]]:
        """Predict on ``model_input``; route on ``params['mode']``.

        Args:
            model_input: resources, resource dicts (as sent in JSON), a list of them, or a
                pandas DataFrame of resource records.
            params: ``mode`` (default ``default``), ``confidence_threshold`` (drop annotations
                below it), the mode's own params (``slice_index``, ``axis``, ...), and the
                Datamint platform's ``model_name`` and ``log_predictions`` (send the
                annotations to the configured platform), which no handler sees.

        Returns:
            One list of annotations per input, in input order.

        Raises:
            ValueError: an unknown mode, a missing or unexpected param, or malformed input
                (:class:`~datamint_core.ResourceError`).
            ResultShapeError: the handler did not return one list of annotations per input.
            NotImplementedError: the model supports neither the mode nor a default.
        """
        params = params or {}
        threshold = _checked_threshold(params.get("confidence_threshold"))
        resources = as_resources(model_input)
        with self._inference_context():
            result = self.router.dispatch(resources, params)
        output = [
            [a for a in entry if threshold is None or a.confidence is None
             or a.confidence >= threshold]
            for entry in result
        ]
        if _is_true(params.get("log_predictions")):
            _extensions.log_predictions(resources, output, params.get("model_name"))
        return output

    def predict_default(
        self, model_input: list[BaseResource], **kwargs: Any
    ) -> list[list[Annotation]]:
        """Predict on whole resources; override this in your subclass."""
        raise NotImplementedError(f"{type(self).__name__} does not implement predict_default().")

    # The stubs below are not handlers (the router ignores them unless overridden). Calling
    # one directly routes the call, so a bridged mode works the same either way.

    def predict_image(
        self, model_input: list[BaseResource], **kwargs: Any
    ) -> list[list[Annotation]]:
        """Predict on 2-D images."""
        return self.router.call(PredictionMode.IMAGE, as_resources(model_input), kwargs)

    def predict_slice(
        self, model_input: list[BaseResource], slice_index: int, axis: str = "axial", **kwargs: Any
    ) -> list[list[Annotation]]:
        """Predict on one slice of each volume (served through ``predict_image`` by default)."""
        params = {"slice_index": slice_index, "axis": axis, **kwargs}
        return self.router.call(PredictionMode.SLICE, as_resources(model_input), params)

    def predict_volume(
        self, model_input: list[BaseResource], **kwargs: Any
    ) -> list[list[Annotation]]:
        """Predict on whole volumes (served slice by slice through ``predict_slice`` by default)."""
        return self.router.call(PredictionMode.VOLUME, as_resources(model_input), kwargs)

    def _pip_requirements(self) -> list[str]:
        """The requirement naming this library (extras add their own, e.g. ``[torch]``)."""
        return [f"datamint=={__version__}"]

    # -- pickling --------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # The router holds bound methods, the device belongs to the machine that loads the
        # model, and linked models are saved on their own (pinned or bundled): all are
        # rebuilt where the model is loaded.
        state.pop("_router", None)
        state.pop("_inference_device", None)
        state.pop("_linked_models", None)
        return state


class WrappedModel(BaseDatamintModel):
    """A Datamint model around any object with ``predict_*`` or ``@prediction_mode`` methods.

    ``save_model`` wraps such objects for you; the wrapped object's handlers serve the modes.
    """

    def __init__(
        self,
        wrapped: Any,
        settings: ModelSettings | dict[str, Any] | None = None,
        task_type: TaskType | str | None = None,
    ) -> None:
        super().__init__(settings)
        self.wrapped = wrapped
        declared = task_type if task_type is not None else getattr(wrapped, "task_type", None)
        if declared is not None:
            self.task_type = TaskType.parse(declared)  # type: ignore[misc]
        specs = getattr(wrapped, "annotation_specs", None)
        if specs is not None:
            self.annotation_specs = list(specs)  # type: ignore[misc]
        if not self.get_supported_modes():
            raise TypeError(
                f"{type(wrapped).__name__} has no prediction handlers: define predict_default() "
                "or predict_<mode>() methods, or decorate methods with @prediction_mode."
            )

    def _build_router(self) -> PredictionRouter:
        router = super()._build_router()
        router.update_registry(self.wrapped)
        return router


def as_datamint_model(model: Any) -> BaseDatamintModel:
    """Return ``model`` itself if it is a Datamint model, else a :class:`WrappedModel`."""
    return model if isinstance(model, BaseDatamintModel) else WrappedModel(model)


def _is_true(value: Any) -> bool:
    """Read a flag sent as a bool, a number or a string (``"true"``, ``"1"``)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _checked_threshold(threshold: Any) -> float | None:
    if threshold is None:
        return None
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not (0.0 <= threshold <= 1.0)
    ):
        raise InvalidRequestError(
            f"confidence_threshold={threshold!r} is not valid; accepted: a number from 0 to 1."
        )
    return float(threshold)
