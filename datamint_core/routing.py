"""Registry-driven dispatch of ``predict`` calls to per-mode handlers.

A handler is any method that takes ``(model_input, **params)`` and returns one list of
annotations per input. Handlers are found in two ways, in this order:

1. methods decorated with :func:`prediction_mode`;
2. methods named ``predict_<mode>`` that override the base class's stub.

Then *bridges* fill the modes a model did not implement from the ones it did:

- ``slice``, ``frame`` and ``all_frames`` are served through ``image`` (views, never copies);
- ``volume`` is served through ``slice`` (every axial slice, one call each); segmentation
  masks of the slices are stacked back into one volume mask that keeps the volume's spacing
  and affine;
- ``volume`` is served through a *patch handler* (``predict_patch``, or a method decorated
  with :func:`~datamint_core.sliding_window.patch_handler`) by a sliding window, when the
  model has one; it wins over the slice bridge, since a patch handler is a 3-D network
  (see :mod:`datamint_core.sliding_window`).

A bridge is only advertised when the mode it stands on is available.

Why one module of some 800 lines: the registry, the mode declarations and the bridges are
one dispatch table; the bridges (``slice`` through ``image``, ``volume`` through ``slice``,
and the entry to :mod:`datamint_core.sliding_window`) read the same specs, so they stay
beside it.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from datamint_core._limits import check_deadline, check_slice_count
from datamint_core._messages import shorten
from datamint_core.annotations import Annotation, AnnotationScope, SegmentationAnnotation
from datamint_core.enums import PredictionMode
from datamint_core.errors import InvalidRequestError, ResultShapeError, UnsupportedModeError
from datamint_core.resources import (
    SLICE_AXES,
    BaseResource,
    ImageResource,
    VideoResource,
    VolumeResource,
)
from datamint_core.sliding_window import (
    WINDOW_PARAMS,
    NumpyPatchArrays,
    SlidingWindow,
    declared_window,
    run_sliding_window,
)

_logger = logging.getLogger(__name__)

Handler = Callable[..., Any]
F = TypeVar("F", bound=Callable[..., Any])

#: Params the router and the model consume themselves; they never reach a handler.
#: ``model_name`` and ``log_predictions`` are what the Datamint platform sends with a request.
RESERVED_PARAMS = frozenset({"mode", "confidence_threshold", "model_name", "log_predictions"})

#: Parameters a convention-named ``predict_<mode>`` method takes, by mode.
CONVENTION_PARAM_KEYS: dict[PredictionMode, tuple[str, ...]] = {
    PredictionMode.SLICE: ("slice_index", "axis"),
    PredictionMode.PRIMARY_SLICE: ("axis",),
    PredictionMode.SLICE_RANGE: ("start_index", "end_index", "axis"),
    PredictionMode.FRAME: ("frame_index",),
    PredictionMode.FRAME_RANGE: ("start_frame", "end_frame"),
    PredictionMode.INTERACTIVE: ("prompt",),
    PredictionMode.FEW_SHOT: ("examples",),
}

#: The request param that carries prompts (see :mod:`datamint_core.prompts`).
PROMPTS_PARAM = "prompts"
#: The prompt kinds (the names :mod:`datamint_core.prompts` reads), and those a handler
#: with a ``prompts`` parameter and no declaration takes.
PROMPT_KINDS = ("points", "boxes", "scribbles", "examples")
DEFAULT_PROMPT_KINDS = ("points", "boxes", "scribbles")

_MODE_ATTRIBUTE = "__datamint_mode_spec__"
#: The convention name of a patch handler (see :mod:`datamint_core.sliding_window`).
PATCH_HANDLER_NAME = "predict_patch"


@dataclasses.dataclass(frozen=True)
class ModeSpec:
    """What a prediction-mode handler declares.

    Args:
        mode: the mode it serves.
        param_keys: request params handed to it as keyword arguments.
        fallback_to_default: when it raises ``NotImplementedError`` (for an input it cannot
            handle), try ``predict_default`` instead.
        prompts: the prompt kinds it takes (``points``, ``boxes``, ``scribbles``,
            ``examples``); it then gets them as its ``prompts`` keyword argument (see
            :mod:`datamint_core.prompts`).
    """

    mode: PredictionMode
    param_keys: tuple[str, ...] = ()
    fallback_to_default: bool = True
    prompts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", PredictionMode.parse(self.mode))
        object.__setattr__(self, "param_keys", _param_keys(self.param_keys))
        object.__setattr__(self, "prompts", _prompt_kinds(self.prompts))
        if self.prompts and PROMPTS_PARAM not in self.param_keys:
            object.__setattr__(self, "param_keys", (*self.param_keys, PROMPTS_PARAM))
        clash = RESERVED_PARAMS.intersection(self.param_keys)
        if clash:
            raise ValueError(
                f"param_keys {sorted(clash)} are reserved for the router itself; "
                f"rename them (reserved: {sorted(RESERVED_PARAMS)})."
            )


def prediction_mode(
    mode: PredictionMode | str,
    *,
    param_keys: Sequence[str] = (),
    fallback_to_default: bool = True,
    prompts: Sequence[str] = (),
) -> Callable[[F], F]:
    """Register a method as the handler of a prediction mode.

    Example::

        class MyModel(BaseDatamintModel):
            @prediction_mode(PredictionMode.SLICE, param_keys=("slice_index", "axis"))
            def segment_one_slice(self, model_input, *, slice_index, axis="axial"):
                ...

    A parameter named in ``param_keys`` that has no default in the method's signature is
    required: a request without it gets a ``ValueError`` naming it.

    A handler that takes prompts declares their kinds (``prompts=("points", "boxes")``)
    or has a ``prompts`` parameter (it then takes points, boxes and scribbles); it gets one
    :class:`~datamint_core.prompts.Prompts` per input, checked and in its own index
    coordinates.
    """
    spec = ModeSpec(
        PredictionMode.parse(mode), param_keys, fallback_to_default, prompts  # type: ignore[arg-type]
    )

    def decorate(method: F) -> F:
        if not callable(method):
            raise TypeError(f"@prediction_mode decorates methods, got {method!r}.")
        setattr(method, _MODE_ATTRIBUTE, spec)
        return method

    return decorate


@dataclasses.dataclass(frozen=True)
class _Route:
    handler: Handler
    spec: ModeSpec
    required: frozenset[str]
    takes_extra_params: bool
    bridge: bool = False


class PredictionRouter:
    """Dispatches ``predict`` calls on ``params['mode']`` to the model's handlers.

    Args:
        model_instance: the object whose handlers serve the modes.
        base_class: the class whose ``predict_<mode>`` methods are stubs, not handlers.
    """

    def __init__(self, model_instance: Any, base_class: type | None = None) -> None:
        self._handlers: dict[PredictionMode, tuple[Handler, ModeSpec]] = {}
        self._routes: dict[PredictionMode, _Route] = {}
        self._patch_handler: tuple[Handler, dict[str, Any]] | None = None
        # The model whose settings and array backend the sliding window uses.
        self._owner = model_instance
        self.update_registry(model_instance, base_class)

    @staticmethod
    def discover(
        model: Any, base_class: type | None
    ) -> dict[PredictionMode, tuple[Handler, ModeSpec]]:
        """Build the mode -> (handler, spec) registry of ``model``.

        Raises:
            TypeError: two methods are decorated for the same mode.
        """
        found: dict[PredictionMode, tuple[Handler, ModeSpec]] = {}
        found_names: dict[PredictionMode, str] = {}
        model_type = type(model)
        for name in dir(model_type):
            spec = getattr(getattr(model_type, name, None), _MODE_ATTRIBUTE, None)
            if not isinstance(spec, ModeSpec):
                continue
            if spec.mode in found:
                raise TypeError(
                    f"{model_type.__name__} has two handlers for mode {spec.mode.value!r}: "
                    f"{found_names[spec.mode]}() and {name}(); keep one."
                )
            found[spec.mode] = (getattr(model, name), spec)
            found_names[spec.mode] = name
        for mode in PredictionMode:
            name = f"predict_{mode.value}"
            if mode in found or not callable(getattr(model, name, None)):
                continue
            if base_class is not None and getattr(model_type, name, None) is getattr(
                base_class, name, None
            ):
                continue  # the base class's own stub, not an implementation
            found[mode] = (
                getattr(model, name),
                ModeSpec(mode, CONVENTION_PARAM_KEYS.get(mode, ())),
            )
        return found

    def update_registry(
        self, model_instance: Any, base_class: type | None = None, overwrite: bool = False
    ) -> None:
        """Add the handlers of ``model_instance`` (a wrapped or linked model).

        Args:
            overwrite: let its handlers replace ones already registered; by default the
                handlers registered first win.
        """
        for mode, entry in self.discover(model_instance, base_class).items():
            if overwrite or mode not in self._handlers:
                self._handlers[mode] = entry
        patch = discover_patch_handler(model_instance, base_class)
        if patch is not None and (overwrite or self._patch_handler is None):
            self._patch_handler = patch
        self._rebuild_routes()

    def supported_modes(self) -> list[str]:
        """Return every mode this router can serve, bridges included, in enum order."""
        return [mode.value for mode in PredictionMode if mode in self._routes]

    def mode_params(self) -> dict[str, dict[str, list[str]]]:
        """Return, per supported mode, the params it takes and those it requires (and, for
        a mode that takes prompts, their kinds under ``prompts``)."""
        return {
            route.spec.mode.value: {
                "params": list(route.spec.param_keys),
                "required": sorted(route.required),
                **({"prompts": list(route.spec.prompts)} if route.spec.prompts else {}),
            }
            for route in self._routes.values()
        }

    def prompt_labels(self) -> list[str] | None:
        """The labels prompts may name: the model's declared annotation labels (None when
        it declares none: any label)."""
        specs = getattr(self._owner, "annotation_specs", None)
        return None if not specs else [spec.identifier for spec in specs]

    def _typed_prompts(
        self, mode: PredictionMode, model_input: list[BaseResource], raw: Any
    ) -> list[Any]:
        from datamint_core.prompts import prepare_prompts

        route = self._routes.get(mode)
        if route is None or not route.spec.prompts:
            takes = [m for m, info in self.mode_params().items() if "prompts" in info]
            raise InvalidRequestError(
                f"Prediction mode {mode.value!r} takes no prompts; accepted: prompts with "
                f"the mode(s) {takes} (this model's interactive modes)."
            )
        return prepare_prompts(
            raw, model_input, kinds=route.spec.prompts, labels=self.prompt_labels()
        )

    def dispatch(self, model_input: list[BaseResource], params: dict[str, Any] | None) -> list:
        """Run the handler for ``params['mode']`` (``default`` when absent).

        Raises:
            InvalidRequestError: an unknown mode, a missing required param, or a param the
                mode's handler does not take.
            ResultShapeError: the handler did not return one list of annotations per input.
            UnsupportedModeError: the model supports neither the mode nor ``predict_default``
                (also a ``NotImplementedError``).
        """
        params = dict(params) if params else {}
        requested = params.pop("mode", None)
        if requested is not None and not isinstance(requested, str):
            raise InvalidRequestError(
                f"Param 'mode'={requested!r} is not valid; accepted: a mode name, one of "
                f"{self.supported_modes()}."
            )
        if requested == "patch":
            raise InvalidRequestError(
                "'patch' is not a prediction mode a request can ask for: the model's patch "
                "handler runs inside 'volume' mode, over a sliding window. Send volumes with "
                f"mode 'volume'; supported modes: {self.supported_modes()}."
            )
        try:
            mode = PredictionMode.parse(requested or PredictionMode.DEFAULT)
        except ValueError as error:
            raise InvalidRequestError(str(error)) from None
        validate_params(params)
        for key in RESERVED_PARAMS.intersection(params):
            del params[key]
        if mode is PredictionMode.DEFAULT:
            mode = self.resolve_default(model_input)
        if params.get(PROMPTS_PARAM) is not None:
            params[PROMPTS_PARAM] = self._typed_prompts(mode, model_input, params[PROMPTS_PARAM])
        return self._run(mode, model_input, params)

    def resolve_default(self, model_input: Sequence[BaseResource]) -> PredictionMode:
        """Pick ``image`` (all inputs images) or ``volume`` (all volumes) when supported."""
        if model_input:
            if PredictionMode.IMAGE in self._routes and all(
                isinstance(r, ImageResource) for r in model_input
            ):
                return PredictionMode.IMAGE
            if PredictionMode.VOLUME in self._routes and all(
                isinstance(r, VolumeResource) for r in model_input
            ):
                return PredictionMode.VOLUME
        return PredictionMode.DEFAULT

    def call(
        self, mode: PredictionMode, model_input: list[BaseResource], params: dict[str, Any]
    ) -> list:
        """Run ``mode``'s handler on already-parsed input, falling back to the default one."""
        route = self._routes.get(mode)
        default = self._routes.get(PredictionMode.DEFAULT)
        if route is None:
            if default is None:
                raise UnsupportedModeError(
                    f"This model does not support prediction mode {mode.value!r} and has no "
                    f"predict_default to fall back to; supported modes: {self.supported_modes()}."
                )
            _logger.debug("mode %r is not implemented; using predict_default", mode.value)
            return _invoke(default, model_input, params)
        kind = _MODE_KINDS.get(mode)
        if kind is not None and not route.bridge:  # bridges check their own inputs
            for resource in model_input:
                _require(kind, resource, mode.value)
        try:
            return _invoke(route, model_input, params)
        except NotImplementedError:
            if default is None or route is default or not route.spec.fallback_to_default:
                raise
            _logger.debug(
                "handler for %r raised NotImplementedError; using predict_default", mode.value
            )
            return _invoke(default, model_input, params)

    def _rebuild_routes(self) -> None:
        routes = {mode: _route(handler, spec) for mode, (handler, spec) in self._handlers.items()}
        image_bridges = {
            PredictionMode.SLICE: self._slice_via_image,
            PredictionMode.FRAME: self._frame_via_image,
            PredictionMode.ALL_FRAMES: self._all_frames_via_image,
        }
        if PredictionMode.IMAGE in routes:
            for mode, bridge in image_bridges.items():
                if mode not in routes:
                    routes[mode] = _route(
                        bridge,
                        ModeSpec(
                            mode,
                            CONVENTION_PARAM_KEYS.get(mode, ()),
                            prompts=_image_prompts(mode, routes[PredictionMode.IMAGE]),
                        ),
                        bridge=True,
                    )
        if self._patch_handler is not None and PredictionMode.VOLUME not in routes:
            routes[PredictionMode.VOLUME] = _route(
                self._volume_via_patch,
                ModeSpec(PredictionMode.VOLUME, WINDOW_PARAMS),
                bridge=True,
            )
        if PredictionMode.SLICE in routes and PredictionMode.VOLUME not in routes:
            routes[PredictionMode.VOLUME] = _route(
                self._volume_via_slice,
                ModeSpec(PredictionMode.VOLUME, prompts=routes[PredictionMode.SLICE].spec.prompts),
                bridge=True,
            )
        self._routes = routes

    def sliding_window(self) -> SlidingWindow | None:
        """The window ``volume`` mode slides, as the model declares it (its patch handler's
        decorator, then its settings' ``sliding_window``); None without a patch handler.

        Raises:
            ValueError: the declaration is incomplete (no ``roi_size``) or out of range.
        """
        if self._patch_handler is None:
            return None
        declared = dict(self._patch_handler[1])
        settings = getattr(getattr(self._owner, "settings", None), "sliding_window", None)
        if settings:
            limits = {**declared.get("limits", {}), **settings.get("limits", {})}
            declared.update(settings)
            declared["limits"] = limits
        return SlidingWindow.from_dict(declared)

    # -- bridges ---------------------------------------------------------------------------

    def _slice_via_image(
        self, model_input: list[BaseResource], slice_index: int, axis: str = "axial", **params: Any
    ) -> list[list[Annotation]]:
        check_deadline()
        views = [
            _require(VolumeResource, r, "slice").get_slice(slice_index, axis) for r in model_input
        ]
        if params.get(PROMPTS_PARAM) is not None:  # the slice's own 2-D coordinates
            params = {
                **params,
                PROMPTS_PARAM: [
                    prompts.for_slice(volume.spatial_shape, SLICE_AXES[axis], slice_index)
                    for prompts, volume in zip(params[PROMPTS_PARAM], model_input, strict=True)
                ],
            }
        results = self._run(PredictionMode.IMAGE, views, params)
        return [
            _stamp(per, AnnotationScope.SLICE, slice_index=int(slice_index), slice_axis=axis)
            for per in results
        ]

    def _frame_via_image(
        self, model_input: list[BaseResource], frame_index: int, **params: Any
    ) -> list[list[Annotation]]:
        check_deadline()
        views = [_require(VideoResource, r, "frame").get_frame(frame_index) for r in model_input]
        results = self._run(PredictionMode.IMAGE, views, params)
        return [_stamp(per, AnnotationScope.FRAME, frame_index=int(frame_index)) for per in results]

    def _all_frames_via_image(
        self, model_input: list[BaseResource], **params: Any
    ) -> list[list[Annotation]]:
        videos = [_require(VideoResource, resource, "all_frames") for resource in model_input]
        check_slice_count(sum(video.num_frames for video in videos), "frames")
        output = []
        for video in videos:
            check_deadline()
            frames = list(video.iter_frames())
            per_frame = self._run(PredictionMode.IMAGE, frames, params)
            output.append(
                [
                    annotation
                    for frame_index, per in enumerate(per_frame)
                    for annotation in _stamp(per, AnnotationScope.FRAME, frame_index=frame_index)
                ]
            )
        return output

    def _volume_via_slice(
        self, model_input: list[BaseResource], **params: Any
    ) -> list[list[Annotation]]:
        volumes = [_require(VolumeResource, resource, "volume") for resource in model_input]
        check_slice_count(sum(volume.num_slices for volume in volumes), "slices")
        output = []
        for volume in volumes:
            per_slice = []
            for slice_index in range(volume.num_slices):
                check_deadline()  # a timed-out request frees the model at the next slice
                (annotations,) = self._run(
                    PredictionMode.SLICE,
                    [volume],
                    {**params, "slice_index": slice_index, "axis": "axial"},
                )
                per_slice.append(
                    _stamp(
                        annotations,
                        AnnotationScope.SLICE,
                        slice_index=slice_index,
                        slice_axis="axial",
                    )
                )
            output.append(_stack_slice_masks(volume, per_slice))
        return output

    def _volume_via_patch(
        self, model_input: list[BaseResource], **params: Any
    ) -> list[list[Annotation]]:
        volumes = [_require(VolumeResource, resource, "volume") for resource in model_input]
        check_slice_count(sum(volume.num_slices for volume in volumes), "slices")
        window = self.sliding_window()
        assert window is not None and self._patch_handler is not None
        try:
            window = window.with_request_params(params)
        except ValueError as error:
            raise InvalidRequestError(str(error)) from None
        handler_params = {k: v for k, v in params.items() if k not in WINDOW_PARAMS}
        patch_route = _route(self._patch_handler[0], ModeSpec(PredictionMode.VOLUME))
        make_arrays = getattr(self._owner, "_patch_arrays", None)
        arrays = make_arrays() if callable(make_arrays) else NumpyPatchArrays()
        output = []
        for volume in volumes:
            check_deadline()
            result = run_sliding_window(
                volume.pixels,
                lambda patches: _invoke(patch_route, patches, handler_params),
                window,
                arrays,
            )
            output.append(_window_annotations(volume, result, window))
        return output

    def _run(
        self, mode: PredictionMode, model_input: list[BaseResource], params: dict[str, Any]
    ) -> list[list[Annotation]]:
        result = self.call(mode, model_input, params)
        check_result(result, len(model_input), mode.value)
        return result


def discover_patch_handler(
    model: Any, base_class: type | None = None
) -> tuple[Handler, dict[str, Any]] | None:
    """Find ``model``'s patch handler and the window it declares, if it has one.

    Raises:
        TypeError: two methods are decorated with ``@patch_handler``.
    """
    model_type = type(model)
    found: list[str] = []
    for name in dir(model_type):
        if declared_window(getattr(model_type, name, None)) is not None:
            found.append(name)
    if len(found) > 1:
        raise TypeError(
            f"{model_type.__name__} has two patch handlers: {found[0]}() and {found[1]}(); "
            "keep one."
        )
    if found:
        handler = getattr(model, found[0])
        return handler, dict(declared_window(handler) or {})
    handler = getattr(model, PATCH_HANDLER_NAME, None)
    if not callable(handler) or (
        base_class is not None
        and getattr(model_type, PATCH_HANDLER_NAME, None)
        is getattr(base_class, PATCH_HANDLER_NAME, None)
    ):
        return None
    return handler, {}


def _window_annotations(
    volume: VolumeResource, result: np.ndarray, window: SlidingWindow
) -> list[Annotation]:
    """One volume mask per class found (the background class left out)."""
    if window.reduction == "argmax":
        masks = ((index, result == index) for index in _labels_present(result))
    else:
        masks = ((index, mask) for index, mask in enumerate(result) if mask.any())
    return [
        SegmentationAnnotation(
            window.class_name(index),
            mask,
            scope=AnnotationScope.VOLUME,
            spacing=volume.spacing,
            affine=volume.affine,
        )
        for index, mask in masks
        if index != window.background
    ]


def _labels_present(labels: np.ndarray, planes: int = 8) -> list[int]:
    """The labels found in a label map, counted a few planes at a time (bincount widens
    the labels to 64 bits: a whole volume at once would be eight times its size)."""
    counts = np.zeros(1, dtype=np.int64)
    for start in range(0, labels.shape[0], planes):
        found = np.bincount(labels[start : start + planes].ravel())
        if found.size > counts.size:
            counts = np.pad(counts, (0, found.size - counts.size))
        counts[: found.size] += found
    return [int(index) for index in np.flatnonzero(counts)]


def _is_index(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0


#: The params the library itself defines: name -> (check, what is accepted).
_PARAM_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "axis": (lambda value: isinstance(value, str) and value in SLICE_AXES, str(list(SLICE_AXES))),
    **{
        name: (_is_index, "a non-negative integer")
        for name in (
            "slice_index",
            "start_index",
            "end_index",
            "frame_index",
            "start_frame",
            "end_frame",
        )
    },
}
_RANGES = (("start_index", "end_index"), ("start_frame", "end_frame"))


def validate_params(params: dict[str, Any]) -> None:
    """Check the params the library defines (``axis``, slice/frame indices and ranges).

    Runs before any handler, so a handler never sees them wrong; whether an index lies
    inside a given resource is checked where the resource is sliced.

    Raises:
        InvalidRequestError: names the param, its value and what is accepted.
    """
    for name, value in params.items():
        rule = _PARAM_RULES.get(name)
        if rule is not None and value is not None and not rule[0](value):
            raise InvalidRequestError(
                shorten(f"Param {name!r}={value!r} is not valid; accepted: {rule[1]}.", 300)
            )
    for start, end in _RANGES:
        if params.get(start) is not None and params.get(end) is not None:
            if params[start] > params[end]:
                raise InvalidRequestError(
                    f"Params {start}={params[start]} and {end}={params[end]} are not a range; "
                    f"accepted: {start} <= {end}."
                )


def check_result(result: Any, expected: int, mode: str) -> None:
    """Check a handler returned one list of annotations per input.

    Raises:
        ResultShapeError: the wrong container, the wrong number of entries, or a
            non-annotation.
    """
    if not isinstance(result, (list, tuple)):
        raise ResultShapeError(
            f"The {mode!r} handler returned a {type(result).__name__}; it must return a list "
            f"with one list of annotations per input ({expected} input(s))."
        )
    if len(result) != expected:
        raise ResultShapeError(
            f"The {mode!r} handler returned {len(result)} entries for {expected} input(s); it "
            "must return exactly one list of annotations per input (use [] for none)."
        )
    for position, entry in enumerate(result):
        if not isinstance(entry, (list, tuple)) or not all(
            isinstance(a, Annotation) for a in entry
        ):
            raise ResultShapeError(
                f"The {mode!r} handler's entry #{position} is not a list of Annotation objects "
                f"(got {type(entry).__name__}); return e.g. [[SegmentationAnnotation(...)], []]."
            )


def _invoke(route: _Route, model_input: list[BaseResource], params: dict[str, Any]) -> Any:
    mode = route.spec.mode.value
    missing = [key for key in route.required if params.get(key) is None]
    if missing:
        raise InvalidRequestError(
            f"Prediction mode {mode!r} needs the parameter(s) {sorted(missing)} in params; "
            f"it takes {list(route.spec.param_keys)}."
        )
    if route.takes_extra_params:
        kwargs = {key: value for key, value in params.items() if value is not None}
    else:
        unexpected = sorted(
            key
            for key, value in params.items()
            if value is not None and key not in route.spec.param_keys
        )
        if unexpected:
            raise InvalidRequestError(
                f"Prediction mode {mode!r} does not take the parameter(s) {unexpected}; "
                f"it takes {list(route.spec.param_keys)} (plus the reserved "
                f"{sorted(RESERVED_PARAMS)})."
            )
        kwargs = {key: params[key] for key in route.spec.param_keys if params.get(key) is not None}
    return route.handler(model_input, **kwargs)


def _route(handler: Handler, spec: ModeSpec, bridge: bool = False) -> _Route:
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # builtins and C callables: assume the loosest contract
        return _Route(handler, spec, frozenset(), True, bridge)
    parameters = signature.parameters
    if not bridge and not spec.prompts and PROMPTS_PARAM in parameters:
        spec = dataclasses.replace(spec, prompts=DEFAULT_PROMPT_KINDS)
    takes_extra = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    required = frozenset(
        key
        for key in spec.param_keys
        if key in parameters and parameters[key].default is inspect.Parameter.empty
    )
    return _Route(handler, spec, required, takes_extra, bridge)


def _image_prompts(mode: PredictionMode, image_route: _Route) -> tuple[str, ...]:
    """The prompt kinds a bridge over ``image`` takes: the image handler's, for slices
    (converted to the slice's coordinates); none for frames."""
    return image_route.spec.prompts if mode is PredictionMode.SLICE else ()


def _prompt_kinds(kinds: Any) -> tuple[str, ...]:
    if isinstance(kinds, str):
        raise TypeError(
            f"prompts must be a sequence of kinds, not the string {kinds!r}; "
            f"write prompts=({kinds!r},)."
        )
    kinds = tuple(kinds)
    unknown = [kind for kind in kinds if kind not in PROMPT_KINDS]
    if unknown:
        raise ValueError(f"Unknown prompt kind(s) {unknown}; accepted: {list(PROMPT_KINDS)}.")
    return kinds


def _param_keys(keys: Any) -> tuple[str, ...]:
    if isinstance(keys, str):
        raise TypeError(
            f"param_keys must be a sequence of names, not the string {keys!r}; "
            f"write param_keys=({keys!r},)."
        )
    keys = tuple(keys)
    if not all(isinstance(key, str) and key for key in keys):
        raise TypeError(f"param_keys must be non-empty strings, got {keys!r}.")
    return keys


_R = TypeVar("_R", bound=BaseResource)

#: The kind of resource each mode is about; a handler of the mode only ever sees that kind.
_MODE_KINDS: dict[PredictionMode, type[BaseResource]] = {
    PredictionMode.IMAGE: ImageResource,
    PredictionMode.SLICE: VolumeResource,
    PredictionMode.PRIMARY_SLICE: VolumeResource,
    PredictionMode.SLICE_RANGE: VolumeResource,
    PredictionMode.VOLUME: VolumeResource,
    PredictionMode.FRAME: VideoResource,
    PredictionMode.FRAME_RANGE: VideoResource,
    PredictionMode.ALL_FRAMES: VideoResource,
}


def _require(kind: type[_R], resource: BaseResource, mode: str) -> _R:
    if not isinstance(resource, kind):
        raise InvalidRequestError(
            f"Prediction mode {mode!r} needs {kind.kind} resources, but resource "
            f"{resource.id or ''!r} is of kind {resource.kind!r}."
        )
    return resource


def _stamp(
    annotations: Sequence[Annotation], scope: AnnotationScope, **where: Any
) -> list[Annotation]:
    """Mark image-scoped annotations with where in the parent they lie."""
    return [
        a.with_fields(scope=scope, **where) if a.scope is AnnotationScope.IMAGE else a
        for a in annotations
    ]


def _stack_slice_masks(
    volume: VolumeResource, per_slice: list[list[Annotation]]
) -> list[Annotation]:
    """Stack each label's slice masks into one volume mask that keeps the volume's geometry.

    Other annotations (boxes, points, classes) stay per slice. A label whose masks do not
    match the slice shape is left per slice too: stacking it would have to invent pixels.
    """
    depth, height, width = volume.spatial_shape
    by_label: dict[str, list[tuple[int, SegmentationAnnotation]]] = {}
    others: list[Annotation] = []
    for slice_index, slice_annotations in enumerate(per_slice):
        for annotation in slice_annotations:
            if (
                isinstance(annotation, SegmentationAnnotation)
                and annotation.scope is AnnotationScope.SLICE
                and annotation.mask.shape == (height, width)
            ):
                by_label.setdefault(annotation.identifier, []).append((slice_index, annotation))
            else:
                others.append(annotation)
    stacked: list[Annotation] = []
    for identifier, entries in by_label.items():
        if len({index for index, _ in entries}) != len(entries):
            others.extend(annotation for _, annotation in entries)  # two masks on one slice
            continue
        mask = np.zeros((depth, height, width), dtype=bool)
        for slice_index, annotation in entries:
            mask[slice_index] = annotation.mask
        confidences = [a.confidence for _, a in entries if a.confidence is not None]
        stacked.append(
            SegmentationAnnotation(
                identifier,
                mask,
                scope=AnnotationScope.VOLUME,
                confidence=float(np.mean(confidences)) if confidences else None,
                spacing=volume.spacing,
                affine=volume.affine,
            )
        )
    return stacked + others
