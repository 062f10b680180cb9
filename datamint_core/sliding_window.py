"""Sliding-window inference: ``volume`` mode for a 3-D network that sees fixed-size patches.

A model implements a *patch handler* (``predict_patch``, or a method decorated with
:func:`patch_handler`): a batch of patches ``(N, C, d, h, w)`` in, per-class scores
``(N, K, d, h, w)`` or a label patch ``(N, d, h, w)`` out. The router then serves ``volume``
mode on volumes of any size through it, as it serves ``volume`` through ``slice`` for 2-D
networks. What the window is (:class:`SlidingWindow`) comes from the handler's decorator,
then the model's settings (``ModelSettings(sliding_window={...})``), then the request's
params, each within the limits the model states.

The tiling is MONAI's ``sliding_window_inference``, to the voxel:

- an axis shorter than the window is padded by ``(roi - size) // 2`` before and the rest
  after (``padding_mode``, ``padding_value``), and cropped back at the end;
- along each axis the windows start every ``int(roi * (1 - overlap))`` voxels (``roi`` when
  the axis is exactly one window long, at least 1) until one reaches the end; the last start
  is moved back so that it ends at the border;
- windows are visited in C order (``D`` slowest) and run ``sw_batch_size`` at a time;
- each window's scores are weighted by an importance map (``constant``: ones; ``gaussian``:
  ``exp(-x**2 / (2 * (sigma_scale * roi)**2))`` per axis, clamped to at least 1e-3), summed,
  and divided by the summed weights.

Memory follows the volume, not volume x classes: windows arrive ``D`` row by ``D`` row, so
the per-class sums live in one slab of ``roi_d`` planes. Whenever the next row of windows
starts further down, the planes above it are finished: divided, reduced to labels (argmax)
or per-class masks (threshold), written into the output, and the slab moves on. The request
deadline is checked between patch batches.

The arithmetic is done by a :class:`PatchArrays` backend: numpy here; the torch extra's runs
patches, blending and reduction on the model's device.

Why one module of some 760 lines: the window's declaration, its tiling, the importance map
and the slab aggregation must agree with MONAI's to the voxel and share their arithmetic;
kept together, they are checked against each other in one place. The torch extra's device
path (:mod:`datamint_torch.sliding_window`) reuses this tiling.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from datamint_core._limits import check_deadline
from datamint_core.errors import PatchResultError

BLEND_MODES = ("constant", "gaussian")
#: Padding of an axis shorter than the window, named as ``torch.nn.functional.pad`` names them.
PADDING_MODES = ("constant", "reflect", "replicate", "circular")
REDUCTIONS = ("argmax", "threshold")
#: The params a request may set (within the model's limits), by name.
WINDOW_PARAMS = (
    "roi_size",
    "overlap",
    "sw_batch_size",
    "blend_mode",
    "sigma_scale",
    "padding_mode",
    "padding_value",
    "threshold",
)
#: Largest window edge and patch batch accepted anywhere (a declaration or a request).
MAX_ROI_EDGE = 2048
MAX_SW_BATCH_SIZE = 4096
_NUMPY_PADDING = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
                  "circular": "wrap"}
_PATCH_ATTRIBUTE = "__datamint_patch_window__"

F = TypeVar("F", bound=Callable[..., Any])


# -- field checks: each takes the field's name and value, returns the value normalised -----


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _triple(name: str, value: Any, check: Callable[[Any], bool], accepted: str) -> tuple:
    values = (value,) * 3 if _is_number(value) else value
    if (
        isinstance(values, (str, bytes))
        or not isinstance(values, Sequence)
        or len(values) != 3
        or not all(_is_number(v) and check(v) for v in values)
    ):
        raise ValueError(f"{name}={value!r} is not valid; accepted: {accepted}.")
    return tuple(values)


def _roi_size(name: str, value: Any) -> tuple[int, int, int]:
    accepted = f"three whole numbers from 1 to {MAX_ROI_EDGE} (d, h, w), or one for all three"
    sizes = _triple(name, value, lambda v: float(v).is_integer() and 1 <= v <= MAX_ROI_EDGE,
                    accepted)
    return tuple(int(v) for v in sizes)  # type: ignore[return-value]


def _overlap(name: str, value: Any) -> tuple[float, float, float]:
    accepted = "a fraction from 0 up to (not including) 1, or three of them (d, h, w)"
    return tuple(float(v) for v in _triple(name, value, lambda v: 0 <= v < 1, accepted))  # type: ignore[return-value]


def _sigma_scale(name: str, value: Any) -> tuple[float, float, float]:
    accepted = "a positive number (sigma = sigma_scale x window edge), or three of them"
    checked = _triple(name, value, lambda v: math.isfinite(v) and v > 0, accepted)
    return tuple(float(v) for v in checked)  # type: ignore[return-value]


def _batch_size(name: str, value: Any) -> int:
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            and 1 <= value <= MAX_SW_BATCH_SIZE):
        raise ValueError(
            f"{name}={value!r} is not valid; accepted: a whole number from 1 to "
            f"{MAX_SW_BATCH_SIZE}."
        )
    return int(value)


def _choice(choices: Sequence[str]) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{name}={value!r} is not valid; accepted: {list(choices)}.")
        return str(value)

    return check


def _finite(name: str, value: Any) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is not valid; accepted: a finite number.")
    return float(value)


def _class_names(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or not value
        or not all(isinstance(v, str) and v for v in value)
        or len(set(value)) != len(value)
    ):
        raise ValueError(
            f"{name}={value!r} is not valid; accepted: a list of distinct non-empty names, "
            "one per output channel."
        )
    return tuple(value)


def _background(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(
            f"{name}={value!r} is not valid; accepted: the index of the class that is not "
            "reported (0 by default), or None to report every class."
        )
    return int(value)


_FIELD_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "roi_size": _roi_size,
    "overlap": _overlap,
    "sw_batch_size": _batch_size,
    "blend_mode": _choice(BLEND_MODES),
    "sigma_scale": _sigma_scale,
    "padding_mode": _choice(PADDING_MODES),
    "padding_value": _finite,
    "reduction": _choice(REDUCTIONS),
    "threshold": _finite,
    "class_names": _class_names,
    "background": _background,
}


def _default_limits(window: SlidingWindow) -> dict[str, Any]:
    """What a request may change when the model states nothing: never the window itself,
    never a bigger patch batch than declared."""
    return {
        "roi_size": None,
        "overlap": [0.0, 0.75],
        "sw_batch_size": [1, window.sw_batch_size],
        "blend_mode": list(BLEND_MODES),
        "sigma_scale": [0.01, 1.0],
        "padding_mode": list(PADDING_MODES),
        "padding_value": [-1e30, 1e30],
        "threshold": [0.0, 1.0],
    }


def _checked_limits(limits: Any) -> dict[str, Any]:
    if not isinstance(limits, Mapping):
        raise ValueError(
            f"limits={limits!r} is not valid; accepted: a dict from a request param "
            f"({list(WINDOW_PARAMS)}) to its allowed range [low, high], its allowed choices, "
            "or None (fixed)."
        )
    unknown = sorted(set(limits) - set(WINDOW_PARAMS))
    if unknown:
        raise ValueError(
            f"limits names {unknown}, which no request can set; accepted keys: "
            f"{list(WINDOW_PARAMS)}."
        )
    checked: dict[str, Any] = {}
    for name, limit in limits.items():
        if limit is None:
            checked[name] = None
        elif name in ("blend_mode", "padding_mode"):
            if isinstance(limit, str) or not isinstance(limit, Sequence):
                raise ValueError(
                    f"limits[{name!r}]={limit!r} is not valid; accepted: a list of choices, "
                    "or None (fixed)."
                )
            choices = [_FIELD_CHECKS[name](f"limits[{name!r}] entry", v) for v in limit]
            checked[name] = choices or None
        else:
            if isinstance(limit, (str, bytes)) or not isinstance(limit, Sequence) or (
                len(limit) != 2
            ):
                raise ValueError(
                    f"limits[{name!r}]={limit!r} is not valid; accepted: [low, high] (each "
                    "a value the param accepts), or None (fixed)."
                )
            low, high = (_FIELD_CHECKS[name](f"limits[{name!r}] bound", v) for v in limit)
            if not _within(low, low, high):
                raise ValueError(f"limits[{name!r}]={limit!r} is not valid: low > high.")
            checked[name] = [list(low) if isinstance(low, tuple) else low,
                             list(high) if isinstance(high, tuple) else high]
    return checked


@dataclasses.dataclass(frozen=True)
class SlidingWindow:
    """How a volume is tiled into patches and the patches' outputs blended back.

    Args:
        roi_size: the patch ``(d, h, w)`` the network takes (one number: a cube).
        overlap: fraction of a window shared with the next along each axis, in [0, 1).
        sw_batch_size: patches per handler call.
        blend_mode: ``constant`` (equal weights) or ``gaussian`` (less weight at the edges).
        sigma_scale: the Gaussian's sigma as a fraction of the window edge.
        padding_mode: how an axis shorter than the window is padded: ``constant``
            (``padding_value``), ``reflect``, ``replicate`` or ``circular``.
        padding_value: the value of ``constant`` padding.
        reduction: ``argmax`` (one label per voxel, classes exclusive) or ``threshold``
            (a mask per class where its score is at least ``threshold``).
        threshold: the score a voxel needs to be in a class's mask (``threshold`` only).
        class_names: one annotation name per output channel; default ``class_1``, ...
        background: the class that is not reported (default 0); None reports every class.
        limits: what a request may change, as ``{param: [low, high]}``, ``{param:
            [choices]}`` or ``{param: None}`` (fixed), over the defaults: ``roi_size``
            fixed, ``overlap`` [0, 0.75], ``sw_batch_size`` up to the declared one, any
            blend and padding mode, ``sigma_scale`` [0.01, 1], ``threshold`` [0, 1].

    Raises:
        ValueError: a value out of its range; the message names it and what is accepted.

    Example::

        SlidingWindow(roi_size=(96, 96, 96), overlap=0.5, blend_mode="gaussian",
                      class_names=("background", "liver", "spleen"),
                      limits={"sw_batch_size": [1, 8]})
    """

    roi_size: tuple[int, int, int]
    overlap: tuple[float, float, float] = (0.25, 0.25, 0.25)
    sw_batch_size: int = 1
    blend_mode: str = "constant"
    sigma_scale: tuple[float, float, float] = (0.125, 0.125, 0.125)
    padding_mode: str = "constant"
    padding_value: float = 0.0
    reduction: str = "argmax"
    threshold: float = 0.5
    class_names: tuple[str, ...] | None = None
    background: int | None = 0
    limits: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name, check in _FIELD_CHECKS.items():
            object.__setattr__(self, name, check(name, getattr(self, name)))
        declared = _checked_limits(self.limits)
        object.__setattr__(self, "limits", {**_default_limits(self), **declared})
        if (
            self.class_names is not None
            and self.background is not None
            and self.background >= len(self.class_names)
        ):
            raise ValueError(
                f"background={self.background} is not valid for {len(self.class_names)} "
                f"class_names; accepted: an index below {len(self.class_names)}, or None."
            )
        object.__setattr__(self, "_declared_limits", declared)  # what to_dict writes back

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SlidingWindow:
        """Build a window from its ``to_dict`` form (as saved in the MLmodel).

        Raises:
            ValueError: an unknown key (named, with the accepted ones), a missing
                ``roi_size``, or a value out of its range.
        """
        check_window_keys(data)
        if "roi_size" not in data:
            raise ValueError(
                "The sliding window has no roi_size: declare the patch (d, h, w) the network "
                "takes, e.g. @patch_handler(roi_size=(96, 96, 96)) or "
                "ModelSettings(sliding_window={'roi_size': [96, 96, 96]})."
            )
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: lists for tuples, only the limits the model stated."""
        data = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name != "limits"
        }
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
        data["limits"] = dict(self._declared_limits)
        return data

    def updated(self, changes: Mapping[str, Any]) -> SlidingWindow:
        """This window with ``changes`` (a partial ``to_dict`` form) applied, as the model
        declares them (no request limits apply)."""
        check_window_keys(changes)
        merged = self.to_dict()
        merged.update(changes)
        if "limits" in changes:
            merged["limits"] = {**self._declared_limits, **(changes["limits"] or {})}
        return SlidingWindow.from_dict(merged)

    def with_request_params(self, params: Mapping[str, Any]) -> SlidingWindow:
        """This window with a request's params applied, each checked against the limits.

        Raises:
            ValueError: a param the model keeps fixed, or a value outside its limit; the
                message names the param, the value and what is accepted.
        """
        changes: dict[str, Any] = {}
        for name, value in params.items():
            if name not in WINDOW_PARAMS or value is None:
                continue
            limit = self.limits.get(name)
            if limit is None:
                raise ValueError(
                    f"Param {name!r} is fixed by this model at {_shown(getattr(self, name))}; "
                    f"a request may set {sorted(k for k, v in self.limits.items() if v)}."
                )
            checked = _FIELD_CHECKS[name](f"Param {name!r}", value)
            if isinstance(limit[0], str):
                if checked not in limit:
                    raise ValueError(
                        f"Param {name!r}={value!r} is not allowed by this model; accepted: "
                        f"{limit}."
                    )
            else:
                low, high = limit
                if not _within(checked, low, high):
                    raise ValueError(
                        f"Param {name!r}={value!r} is outside this model's limits; accepted: "
                        f"{_shown(low)} to {_shown(high)}."
                    )
            changes[name] = checked
        return dataclasses.replace(self, **changes, limits=self._declared_limits)

    def class_name(self, index: int) -> str:
        """The annotation name of output channel ``index``."""
        return self.class_names[index] if self.class_names else f"class_{index}"


def _within(value: Any, low: Any, high: Any) -> bool:
    """``low <= value <= high`` on every axis (a number stands for all three)."""
    values, lows, highs = np.broadcast_arrays(np.atleast_1d(value), np.atleast_1d(low),
                                              np.atleast_1d(high))
    return bool(np.all((lows <= values) & (values <= highs)))


def _shown(value: Any) -> str:
    return repr(list(value)) if isinstance(value, (tuple, list)) else repr(value)


def check_window_keys(data: Any) -> None:
    """Refuse a sliding-window dict with keys that are not :class:`SlidingWindow` fields.

    Raises:
        ValueError: not a dict, or unknown keys (named, with the accepted ones).
    """
    if not isinstance(data, Mapping):
        raise ValueError(
            f"A sliding window is given as a dict of its settings, got {type(data).__name__}."
        )
    known = [field.name for field in dataclasses.fields(SlidingWindow)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"Unknown sliding-window setting(s) {unknown}; accepted: {known}.")


def check_partial_window(data: Any) -> dict[str, Any]:
    """Check the settings in a partial window dict (``ModelSettings(sliding_window=...)``).

    Returns:
        The dict in its JSON form (lists for tuples).

    Raises:
        ValueError: an unknown key or a value out of its range.
    """
    check_window_keys(data)
    checked: dict[str, Any] = {}
    for name, value in data.items():
        if name == "limits":
            _checked_limits(value)
            checked[name] = dict(value)
            continue
        normalised = _FIELD_CHECKS[name](name, value)
        checked[name] = list(normalised) if isinstance(normalised, tuple) else normalised
    return checked


def patch_handler(
    window: SlidingWindow | Mapping[str, Any] | None = None, **settings: Any
) -> Callable[[F], F]:
    """Register a method as the model's patch handler and declare its sliding window.

    The handler takes a batch of patches ``(N, C, d, h, w)`` (float32; numpy arrays, or torch
    tensors on the inference device for a ``datamint_torch.DatamintModel``) and returns
    per-class scores ``(N, K, d, h, w)`` or labels ``(N, d, h, w)``; ``volume`` mode then
    runs it over a sliding window. Settings are :class:`SlidingWindow`'s.

    Example::

        class Segmenter(BaseDatamintModel):
            @patch_handler(roi_size=(64, 64, 64), overlap=0.5, blend_mode="gaussian",
                           class_names=("background", "tumour"))
            def segment(self, patches):
                return self.network(patches)

    Raises:
        ValueError: a setting out of its range (at class definition).
    """
    declared = dict(window.to_dict() if isinstance(window, SlidingWindow) else window or {})
    declared.update(settings)
    checked = check_partial_window(declared)
    if "roi_size" in checked:
        SlidingWindow.from_dict(checked)  # cross-field checks, at class definition

    def decorate(method: F) -> F:
        if not callable(method):
            raise TypeError(f"@patch_handler decorates methods, got {method!r}.")
        setattr(method, _PATCH_ATTRIBUTE, checked)
        return method

    return decorate


def declared_window(handler: Any) -> dict[str, Any] | None:
    """The window settings ``handler`` was decorated with, or None for a plain method."""
    return getattr(handler, _PATCH_ATTRIBUTE, None)


# -- tiling (MONAI's) -------------------------------------------------------------------------


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Where the windows along one axis of ``size`` (at least ``roi``) voxels start."""
    interval = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    count = 1 + next(d for d in range(math.ceil(size / interval)) if d * interval + roi >= size)
    return [min(index * interval, size - roi) for index in range(count)]


def border_padding(shape: Sequence[int], roi: Sequence[int]) -> list[tuple[int, int]]:
    """Voxels added before and after each axis shorter than the window."""
    missing = [max(r - s, 0) for s, r in zip(shape, roi, strict=True)]
    return [(count // 2, count - count // 2) for count in missing]


def window_corners(shape: Sequence[int], window: SlidingWindow) -> list[tuple[int, int, int]]:
    """Every window's first voxel in the padded volume, in the order they run (D slowest)."""
    padding = border_padding(shape, window.roi_size)
    padded = [size + lo + hi for size, (lo, hi) in zip(shape, padding, strict=True)]
    starts = [
        window_starts(*args) for args in zip(padded, window.roi_size, window.overlap, strict=True)
    ]
    return list(itertools.product(*starts))  # type: ignore[arg-type]


def importance_map(window: SlidingWindow) -> np.ndarray:
    """The weight of each voxel of a window's output, float32 ``(d, h, w)``."""
    if window.blend_mode == "constant":
        return np.ones(window.roi_size, dtype=np.float32)
    weights = np.ones((), dtype=np.float32)
    for size, scale in zip(window.roi_size, window.sigma_scale, strict=True):
        x = np.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=np.float32)
        gaussian = np.exp(x**2 / np.float32(-2 * (size * scale) ** 2)).astype(np.float32)
        weights = weights[..., None] * gaussian
    return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)


def pad_volume(pixels: np.ndarray, window: SlidingWindow) -> np.ndarray:
    """``pixels`` (channel-last when 4-D) padded to at least the window, as float32; the
    array itself when no axis is shorter."""
    padding = border_padding(pixels.shape[:3], window.roi_size)
    if not any(lo or hi for lo, hi in padding):
        return pixels
    padding += [(0, 0)] * (pixels.ndim - 3)
    mode = _NUMPY_PADDING[window.padding_mode]
    extra = {"constant_values": window.padding_value} if mode == "constant" else {}
    return np.pad(pixels.astype(np.float32), padding, mode=mode, **extra)  # type: ignore[call-overload]


# -- the arrays a backend works on -----------------------------------------------------------


class PatchArrays(Protocol):
    """The array work of sliding-window inference, on one device.

    The core's :class:`NumpyPatchArrays` works on numpy arrays; the torch extra's on torch
    tensors on the model's device. ``volume`` is what :meth:`prepare` returned; ``buffer``,
    ``scores`` and ``weights`` are arrays this backend made.
    """

    def prepare(self, pixels: np.ndarray) -> Any:
        """The (padded) volume, ``(D, H, W)`` or channel-last ``(D, H, W, C)``, ready to cut."""

    def patches(self, volume: Any, corners: Sequence[tuple[int, int, int]],
                roi: tuple[int, int, int]) -> Any:
        """The windows at ``corners`` as one float32 batch ``(N, C, d, h, w)``."""

    def importance_map(self, window: SlidingWindow) -> Any:
        """:func:`importance_map` on this backend's device."""

    def scores(self, result: Any, count: int, window: SlidingWindow) -> Any:
        """The handler's result as float32 scores ``(N, K, d, h, w)`` (labels one-hot)."""

    def zeros(self, shape: tuple[int, ...]) -> Any:
        """A float32 buffer of zeros."""

    def argmax(self, scores: Any, out: np.ndarray) -> None:
        """Write the index of the highest score along axis 0 into ``out``."""

    def at_least(self, scores: Any, threshold: float, out: np.ndarray) -> None:
        """Write ``scores >= threshold`` into the bool array ``out``."""

    def to_numpy(self, array: Any) -> np.ndarray:
        """A numpy copy (or view) of ``array``."""


class NumpyPatchArrays:
    """Sliding-window array work in numpy, on the CPU."""

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        return pixels

    def patches(self, volume: np.ndarray, corners: Sequence[tuple[int, int, int]],
                roi: tuple[int, int, int]) -> np.ndarray:
        channels = volume.shape[3] if volume.ndim == 4 else 1
        batch = np.empty((len(corners), channels, *roi), dtype=np.float32)
        for out, (d, h, w) in zip(batch, corners, strict=True):
            block = volume[d : d + roi[0], h : h + roi[1], w : w + roi[2]]
            out[...] = np.moveaxis(block, -1, 0) if volume.ndim == 4 else block
        return batch

    def importance_map(self, window: SlidingWindow) -> np.ndarray:
        return importance_map(window)

    def scores(self, result: Any, count: int, window: SlidingWindow) -> np.ndarray:
        array = np.asarray(result)
        kind = checked_patch_result(array.shape, array.dtype.kind, count, window)
        if kind == "labels":
            classes = len(window.class_names or ())
            check_label_range(int(array.min()), int(array.max()), window)
            return (array[:, None] == np.arange(classes).reshape(1, -1, 1, 1, 1)).astype(
                np.float32
            )
        return array.astype(np.float32, copy=False)

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    def argmax(self, scores: np.ndarray, out: np.ndarray) -> None:
        out[...] = scores.argmax(axis=0)

    def at_least(self, scores: np.ndarray, threshold: float, out: np.ndarray) -> None:
        np.greater_equal(scores, threshold, out=out)

    def to_numpy(self, array: np.ndarray) -> np.ndarray:
        return array


def checked_patch_result(
    shape: tuple[int, ...], dtype_kind: str, count: int, window: SlidingWindow
) -> str:
    """Say whether a patch result of ``shape`` is ``scores`` or ``labels``.

    Raises:
        PatchResultError: neither ``(N, K, d, h, w)`` scores nor ``(N, d, h, w)`` integer
            labels for the ``N`` patches sent, or labels with no ``class_names`` declared.
    """
    roi = tuple(window.roi_size)
    if len(shape) == 5 and shape[0] == count and tuple(shape[2:]) == roi and shape[1] >= 1:
        if window.class_names is not None and shape[1] != len(window.class_names):
            raise PatchResultError(
                f"The patch handler returned {shape[1]} channels, but the model declares "
                f"{len(window.class_names)} class_names {list(window.class_names)}; return one "
                "channel per class."
            )
        return "scores"
    if len(shape) == 4 and shape[0] == count and tuple(shape[1:]) == roi and dtype_kind in "iub":
        if window.class_names is None:
            raise PatchResultError(
                "The patch handler returned label patches, which are blended as one-hot "
                "scores: declare the classes with class_names=(...) in the sliding window."
            )
        return "labels"
    raise PatchResultError(
        f"The patch handler returned shape {tuple(shape)} for {count} patch(es) of "
        f"{list(roi)}; accepted: per-class scores ({count}, K, {', '.join(map(str, roi))}) or "
        f"integer labels ({count}, {', '.join(map(str, roi))})."
    )


def check_label_range(low: int, high: int, window: SlidingWindow) -> None:
    """Refuse label patches holding a value that is not a declared class's index.

    Raises:
        PatchResultError: naming the values found and the accepted range.
    """
    classes = len(window.class_names or ())
    if low < 0 or high >= classes:
        raise PatchResultError(
            f"The patch handler returned labels from {low} to {high}; accepted: class indices "
            f"0 to {classes - 1} (class_names {list(window.class_names or ())})."
        )


# -- the sliding window ----------------------------------------------------------------------


def iter_blended_slabs(
    pixels: np.ndarray,
    predict_patches: Callable[[Any], Any],
    window: SlidingWindow,
    arrays: PatchArrays | None = None,
) -> Iterator[tuple[int, int, Any]]:
    """Run the sliding window over ``pixels`` and yield the blended scores slab by slab.

    Args:
        pixels: the volume, ``(D, H, W)`` or channel-last ``(D, H, W, C)``.
        predict_patches: the patch handler: ``(N, C, d, h, w)`` in, scores or labels out.
        window: the tiling and blending.
        arrays: the backend (numpy when None).

    Yields:
        ``(start, stop, scores)``: the planes ``start:stop`` of the volume are finished, and
        ``scores`` ``(K, stop - start, H, W)`` holds their blended scores. It is a view of the
        slab, valid until the next item is asked for.

    Raises:
        RequestDeadlineExceeded: the request's deadline passed (checked between batches).
        PatchResultError: the handler returned the wrong shape.
    """
    arrays = arrays if arrays is not None else NumpyPatchArrays()
    if pixels.ndim not in (3, 4):
        raise ValueError(
            f"A sliding window runs over a volume (D, H, W) or (D, H, W, C); got shape "
            f"{pixels.shape}."
        )
    shape = pixels.shape[:3]
    roi = window.roi_size
    padding = border_padding(shape, roi)
    volume = arrays.prepare(pad_volume(pixels, window))
    padded_depth = shape[0] + sum(padding[0])
    corners = window_corners(shape, window)
    weights = arrays.importance_map(window) if window.blend_mode == "gaussian" else None
    (depth_lo, _), (height_lo, _), (width_lo, _) = padding
    crop_h = slice(height_lo, height_lo + shape[1])
    crop_w = slice(width_lo, width_lo + shape[2])
    # The slab is a ring of roi_d planes: padded plane p lives at p % roi_d, so moving on
    # never copies a plane; a finished plane is zeroed for the one that will take its place.
    depth = roi[0]
    sums = counts = None
    slab_start = 0  # the first padded plane not finished yet

    def finished(stop: int) -> Iterator[tuple[int, int, Any]]:
        for first, last, ring in _ring_pieces(slab_start, stop, depth):
            sums[:, ring] /= counts[:, ring]
            kept_first, kept_last = max(first, depth_lo), min(last, depth_lo + shape[0])
            if kept_last > kept_first:  # planes of the volume, not of its padding
                planes = slice(ring.start + kept_first - first, ring.start + kept_last - first)
                yield kept_first - depth_lo, kept_last - depth_lo, sums[:, planes, crop_h, crop_w]
            sums[:, ring] = 0
            counts[:, ring] = 0

    for batch_start in range(0, len(corners), window.sw_batch_size):
        check_deadline()  # a timed-out request frees the model at the next patch batch
        batch = corners[batch_start : batch_start + window.sw_batch_size]
        scores = arrays.scores(
            predict_patches(arrays.patches(volume, batch, roi)), len(batch), window
        )
        if sums is None:
            sums = arrays.zeros((scores.shape[1], depth, *volume.shape[1:3]))
            counts = arrays.zeros((1, depth, *volume.shape[1:3]))
        for (d, h, w), patch in zip(batch, scores, strict=True):
            if d > slab_start:  # no later window reaches above d: those planes are done
                yield from finished(d)
                slab_start = d
            # Constant weights are ones: adding the scores as they are is the same sum, bit
            # for bit, without a weighted copy of every patch.
            weighted = patch if weights is None else patch * weights
            for first, last, ring in _ring_pieces(d, d + depth, depth):
                where = (slice(None), ring, slice(h, h + roi[1]), slice(w, w + roi[2]))
                sums[where] += weighted[:, first - d : last - d]
                counts[where] += 1.0 if weights is None else weights[first - d : last - d]
    yield from finished(padded_depth)


def _ring_pieces(start: int, stop: int, depth: int) -> list[tuple[int, int, slice]]:
    """Padded planes ``start:stop`` (at most ``depth``) as runs contiguous in the ring:
    ``(first, last, ring planes)``."""
    offset = start % depth
    if offset + (stop - start) <= depth:
        return [(start, stop, slice(offset, offset + stop - start))]
    split = start + depth - offset
    return [(start, split, slice(offset, depth)), (split, stop, slice(0, stop - split))]


def run_sliding_window(
    pixels: np.ndarray,
    predict_patches: Callable[[Any], Any],
    window: SlidingWindow,
    arrays: PatchArrays | None = None,
) -> np.ndarray:
    """Run the sliding window and reduce it as it goes.

    Returns:
        For ``reduction='argmax'``, the label map ``(D, H, W)`` (uint8, or uint16 beyond 256
        classes); for ``'threshold'``, the masks ``(K, D, H, W)`` (bool).

    Raises:
        RequestDeadlineExceeded: the request's deadline passed.
        PatchResultError: the handler returned the wrong shape.
    """
    arrays = arrays if arrays is not None else NumpyPatchArrays()
    shape = pixels.shape[:3]
    output: np.ndarray | None = None
    for start, stop, scores in iter_blended_slabs(pixels, predict_patches, window, arrays):
        classes = scores.shape[0]
        if output is None:
            if window.reduction == "argmax":
                dtype = np.uint8 if classes <= 256 else np.uint16
                output = np.empty(shape, dtype=dtype)
            else:
                output = np.empty((classes, *shape), dtype=bool)
        if window.reduction == "argmax":
            arrays.argmax(scores, output[start:stop])
        else:
            arrays.at_least(scores, window.threshold, output[:, start:stop])
    assert output is not None
    return output
