"""Segmentation metrics that the field uses, per label and per case, in millimetres.

Dice, IoU, the 95th-percentile Hausdorff distance (``hd95``), the average symmetric surface
distance (``assd``) and the normalized surface Dice at a tolerance in mm (``nsd``), computed
with numpy and scipy (``pip install "datamint[metrics]"``), no torch. Each value equals the
one MONAI computes on the same masks (``DiceMetric``, ``MeanIoU``,
``HausdorffDistanceMetric(percentile=95)``, ``SurfaceDistanceMetric(symmetric=True)``,
``SurfaceDiceMetric``, each with ``include_background=False`` on one-hot masks): the same
surface (the voxels of a mask with a 6-neighbour, 4 in 2-D, outside it; the array's border
counts as outside), the same exact Euclidean distances between surface voxel centres scaled
by the spacing, the same percentile (linear interpolation), the same empty-mask values.

Masks are label maps: integer (or whole-valued float, as NIfTI readers return) arrays of
one 2-D image ``(H, W)`` or one 3-D volume ``(D, H, W)``, ``0`` being background, or
boolean masks (one label, ``1``). ``spacing`` is the voxel size along the array's axes, in
mm (``VolumeResource.spacing`` order), so anisotropic voxels are measured as they are.

Values for empty masks (MONAI's; ``ignore_empty=False`` gives MONAI's ``ignore_empty=False``
Dice and IoU):

==========================  ===========  ======================  ======================
metric                      both empty   prediction empty only   truth empty only
==========================  ===========  ======================  ======================
dice, iou                   nan          0.0                     nan
dice, iou (ignore_empty=F)  1.0          0.0                     0.0
hd95                        nan          nan                     nan
assd (and the plain max HD) nan          inf                     inf
nsd                         nan          0.0                     0.0
==========================  ===========  ======================  ======================

``nan`` means "not defined for this case": summaries skip it (as MONAI's reductions do).
With one mask empty every surface distance is infinite, whose 95th percentile MONAI
reports as ``nan`` (its linear interpolation meets ``inf - inf``); this module reports the
same, so a missed or a spurious structure shows in ``assd`` (``inf``, kept by summaries),
``nsd`` (0) and, for a missed one, ``dice`` (0), not in ``hd95``.

Speed: each label is measured on the bounding box of the union of its two masks, one label
at a time (no one-hot of all labels), and the surface distances are computed once for all
three distance metrics, with a k-d tree over the surface voxels (as MONAI does on the CPU;
on whole-organ masks it is several times faster than a distance transform of the box).

Example::

    from datamint_core.metrics import segmentation_metrics, summarize_metrics

    case = segmentation_metrics(prediction, truth, labels={1: "liver", 2: "tumour"},
                                spacing=(2.5, 0.8, 0.8), tolerance_mm=2.0)
    case["liver"]["dice"], case["tumour"]["hd95"]
    summary = summarize_metrics([case, other_case])   # {"dice": ..., "dice/liver": ...}

Why one module of some 540 lines: the five metrics share one surface extraction, one
distance transform and one table of empty-mask values, and MONAI's conventions are
matched in one place; splitting them would spread those shared rules over several files.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from datamint_core._extras import missing_extra

__all__ = [
    "METRIC_NAMES",
    "average_surface_distance",
    "case_mean",
    "dice",
    "flatten_metrics",
    "hausdorff_distance",
    "iou",
    "segmentation_metrics",
    "summarize_metrics",
    "surface_dice",
]

#: The metrics :func:`segmentation_metrics` computes for each label, in this order.
METRIC_NAMES: tuple[str, ...] = ("dice", "iou", "hd95", "assd", "nsd")

_SEPARATOR = "/"


def segmentation_metrics(
    prediction: Any,
    truth: Any,
    *,
    labels: Mapping[Any, str] | Sequence[int] | None = None,
    spacing: float | Sequence[float] | None = None,
    tolerance_mm: float | Mapping[Any, float] = 1.0,
    ignore_empty: bool = True,
) -> dict[str, dict[str, float]]:
    """Every metric of :data:`METRIC_NAMES` for each label of one case.

    Args:
        prediction: the predicted label map (or boolean mask), 2-D or 3-D.
        truth: the reference label map of the same shape.
        labels: the labels to score: ``{value: name}`` (keys may be digit strings, as in a
            Decathlon ``dataset.json``; ``0``, the background, is skipped), or a sequence of
            values (named by their number). By default every non-zero value found in
            either map, so a label absent from both is not reported: pass ``labels`` to
            get its ``nan`` row.
        spacing: voxel size in mm along each axis, or one number for all; default 1.
        tolerance_mm: the normalized surface Dice's tolerance, one for all labels or
            ``{value or name: mm}`` for each.
        ignore_empty: MONAI's ``ignore_empty`` for Dice and IoU (see the module's table).

    Returns:
        ``{label name: {metric name: value}}``, labels in increasing value order.

    Raises:
        ValueError: masks of other shapes or ranks, non-integer labels, a bad spacing,
            labels or tolerance.
        ImportError: scipy is missing (``pip install "datamint[metrics]"``).
    """
    prediction_map, truth_map = _label_maps(prediction, truth)
    scale = _spacing(spacing, prediction_map.ndim)
    named = _named_labels(labels, prediction_map, truth_map)
    tolerances = _tolerances(tolerance_mm, named)
    # One pass over the whole volume: everything else happens inside the foreground's box.
    box = _bounding_box((prediction_map != 0) | (truth_map != 0))
    if box is not None:
        prediction_map, truth_map = prediction_map[box], truth_map[box]
    results: dict[str, dict[str, float]] = {}
    for value, name in named.items():
        if box is None:
            empty = np.zeros((1,) * prediction_map.ndim, dtype=bool)
            results[name] = _label_metrics(empty, empty, scale, tolerances[value], ignore_empty)
        else:
            results[name] = _label_metrics(
                prediction_map == value, truth_map == value, scale, tolerances[value], ignore_empty
            )
    return results


def dice(prediction: Any, truth: Any, *, ignore_empty: bool = True) -> float:
    """The Dice coefficient of two boolean masks, as MONAI's ``DiceMetric``."""
    predicted, reference = _binary_pair(prediction, truth)
    return _overlap(predicted, reference, ignore_empty)[0]


def iou(prediction: Any, truth: Any, *, ignore_empty: bool = True) -> float:
    """The intersection over union of two boolean masks, as MONAI's ``MeanIoU``."""
    predicted, reference = _binary_pair(prediction, truth)
    return _overlap(predicted, reference, ignore_empty)[1]


def hausdorff_distance(
    prediction: Any,
    truth: Any,
    *,
    spacing: float | Sequence[float] | None = None,
    percentile: float | None = 95.0,
) -> float:
    """The (percentile) symmetric Hausdorff distance between two masks' surfaces, in mm.

    As MONAI's ``HausdorffDistanceMetric(percentile=…)``: the larger of the two directed
    distances' percentiles; ``percentile=None`` gives the maximum. With one mask empty:
    ``inf`` for the maximum, ``nan`` for a percentile (MONAI's values).
    """
    if percentile is not None and not (_is_number(percentile) and 0 <= float(percentile) <= 100):
        raise ValueError(f"percentile must be a number from 0 to 100 or None; got {percentile!r}")
    predicted, reference = _binary_pair(prediction, truth)
    forward, backward = _surface_distances(predicted, reference, _spacing(spacing, predicted.ndim))
    if forward is None or backward is None:
        # MONAI: the maximum of infinite distances is inf, any percentile of them nan.
        return math.inf if forward is not backward and not percentile else math.nan
    return max(_percentile(forward, percentile), _percentile(backward, percentile))


def average_surface_distance(
    prediction: Any, truth: Any, *, spacing: float | Sequence[float] | None = None
) -> float:
    """The average symmetric surface distance in mm, as MONAI's
    ``SurfaceDistanceMetric(symmetric=True)``: the mean over both surfaces' voxels."""
    predicted, reference = _binary_pair(prediction, truth)
    forward, backward = _surface_distances(predicted, reference, _spacing(spacing, predicted.ndim))
    if forward is None or backward is None:
        return _empty_distance(forward, backward)
    return _mean_symmetric(forward, backward)


def surface_dice(
    prediction: Any,
    truth: Any,
    *,
    tolerance_mm: float,
    spacing: float | Sequence[float] | None = None,
) -> float:
    """The normalized surface Dice at ``tolerance_mm``, as MONAI's ``SurfaceDiceMetric``:
    the share of both surfaces' voxels lying within the tolerance of the other surface."""
    tolerance = _checked_tolerance(tolerance_mm, "tolerance_mm")
    predicted, reference = _binary_pair(prediction, truth)
    forward, backward = _surface_distances(predicted, reference, _spacing(spacing, predicted.ndim))
    if forward is None or backward is None:
        return math.nan if forward is None and backward is None else 0.0
    return _within(forward, backward, tolerance)


def case_mean(case: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Each metric averaged over one case's labels, skipping ``nan`` (MONAI's channel mean).

    ``nan`` where no label has a value.
    """
    return {
        metric: _mean(row.get(metric, math.nan) for row in case.values())
        for metric in _metrics_of([case])
    }


def summarize_metrics(
    cases: Iterable[Mapping[str, Mapping[str, float]]],
) -> dict[str, float]:
    """Summary metrics of many cases, as MONAI's reductions compute them.

    Returns:
        ``{"dice": …, "dice/liver": …, …}``: ``metric`` is MONAI's ``reduction="mean"``
        (each case's mean over its labels, then the mean over cases), ``metric/label`` is
        ``reduction="mean_batch"`` (the label's mean over cases); ``nan`` values are
        skipped, and a value with nothing to average is ``nan`` (MONAI says 0).
    """
    case_list = list(cases)
    for position, case in enumerate(case_list):
        if not isinstance(case, Mapping) or not all(
            isinstance(row, Mapping) for row in case.values()
        ):
            raise ValueError(
                f"summarize_metrics takes a list of cases, and case #{position} is "
                f"{_shown(case)}; accepted: each case as segmentation_metrics returns it, "
                '{label name: {metric name: value}} (pass [case] for one case).'
            )
    metrics = _metrics_of(case_list)
    summary = {}
    for metric in metrics:
        summary[metric] = _mean(case_mean(case).get(metric, math.nan) for case in case_list)
    names: list[str] = []
    for case in case_list:
        names.extend(name for name in case if name not in names)
    for metric in metrics:
        for name in names:
            summary[f"{metric}{_SEPARATOR}{name}"] = _mean(
                case[name].get(metric, math.nan) for case in case_list if name in case
            )
    return summary


def flatten_metrics(case: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """One case's metrics as flat ``{"dice/liver": …}`` (one row of a per-case table)."""
    return {
        f"{metric}{_SEPARATOR}{name}": value
        for name, row in case.items()
        for metric, value in row.items()
    }


# --- one label ---------------------------------------------------------------------------


def _label_metrics(
    predicted: np.ndarray,
    reference: np.ndarray,
    scale: tuple[float, ...],
    tolerance: float,
    ignore_empty: bool,
) -> dict[str, float]:
    dice_value, iou_value = _overlap(predicted, reference, ignore_empty)
    forward, backward = _surface_distances(predicted, reference, scale)
    if forward is None or backward is None:
        hd95 = math.nan  # see the module's table
        assd = _empty_distance(forward, backward)
        nsd = math.nan if forward is None and backward is None else 0.0
    else:
        hd95 = max(_percentile(forward, 95.0), _percentile(backward, 95.0))
        assd = _mean_symmetric(forward, backward)
        nsd = _within(forward, backward, tolerance)
    return {"dice": dice_value, "iou": iou_value, "hd95": hd95, "assd": assd, "nsd": nsd}


def _overlap(
    predicted: np.ndarray, reference: np.ndarray, ignore_empty: bool
) -> tuple[float, float]:
    """(Dice, IoU) with MONAI's conventions for an empty truth."""
    predicted_count = int(np.count_nonzero(predicted))
    reference_count = int(np.count_nonzero(reference))
    if reference_count == 0:
        if ignore_empty:
            return math.nan, math.nan
        return (1.0, 1.0) if predicted_count == 0 else (0.0, 0.0)
    both = int(np.count_nonzero(predicted & reference))
    union = predicted_count + reference_count - both
    return 2.0 * both / (predicted_count + reference_count), both / union


def _surface_distances(
    predicted: np.ndarray, reference: np.ndarray, scale: tuple[float, ...]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Distances (mm) from each surface voxel of one mask to the other mask's surface.

    Returns ``(prediction→truth, truth→prediction)``. Where a mask is empty its side is
    ``None`` (no surface to measure from) and the other side ``[inf]`` (nothing to reach).
    """
    box = _bounding_box(predicted | reference)
    if box is None:
        return None, None
    predicted, reference = predicted[box], reference[box]
    predicted_edges, reference_edges = _edges(predicted), _edges(reference)
    predicted_any, reference_any = bool(predicted_edges.any()), bool(reference_edges.any())
    if not (predicted_any and reference_any):
        return (
            np.array([math.inf]) if predicted_any else None,
            np.array([math.inf]) if reference_any else None,
        )
    return (
        _nearest(predicted_edges, reference_edges, scale),
        _nearest(reference_edges, predicted_edges, scale),
    )


def _nearest(source: np.ndarray, target: np.ndarray, scale: tuple[float, ...]) -> np.ndarray:
    """For each ``source`` voxel, the distance in mm to the nearest ``target`` voxel."""
    spatial = _require_scipy_spatial()
    shared = source & target
    distances = np.zeros(int(np.count_nonzero(source)), dtype=np.float64)
    # Voxels on both surfaces are at distance 0: only the others need a tree query.
    elsewhere = ~shared[source]
    if elsewhere.any():
        factors = np.asarray(scale, dtype=np.float64)
        points = np.argwhere(source & ~target).astype(np.float64) * factors
        tree = spatial.cKDTree(np.argwhere(target).astype(np.float64) * factors, leafsize=32)
        distances[elsewhere] = tree.query(points, k=1)[0]
    return distances


def _edges(mask: np.ndarray) -> np.ndarray:
    """The voxels of ``mask`` with a face neighbour outside it (the array's border is outside).

    The same voxels as MONAI's ``binary_erosion(mask) ^ mask`` (scipy's default
    cross-shaped structure, border value 0), without scipy's generic structuring loop.
    """
    padded = np.pad(mask, 1)
    inside = tuple(slice(1, -1) for _ in range(mask.ndim))
    interior = mask.copy()
    for axis in range(mask.ndim):
        for shifted in (slice(None, -2), slice(2, None)):
            neighbour = list(inside)
            neighbour[axis] = shifted
            interior &= padded[tuple(neighbour)]
    return mask & ~interior


def _percentile(distances: np.ndarray, percentile: float | None) -> float:
    if not percentile:  # MONAI: None or 0 means the maximum
        return float(distances.max())
    return float(np.percentile(distances, float(percentile)))


def _mean_symmetric(forward: np.ndarray, backward: np.ndarray) -> float:
    return float((forward.sum() + backward.sum()) / (forward.size + backward.size))


def _within(forward: np.ndarray, backward: np.ndarray, tolerance: float) -> float:
    # MONAI compares float32 distances with the tolerance cast to float32: do the same, so a
    # distance equal to the tolerance counts the same way in both.
    limit = np.float32(tolerance)
    inside = np.count_nonzero(forward.astype(np.float32) <= limit) + np.count_nonzero(
        backward.astype(np.float32) <= limit
    )
    return float(inside / (forward.size + backward.size))


def _empty_distance(forward: np.ndarray | None, backward: np.ndarray | None) -> float:
    return math.nan if forward is None and backward is None else math.inf


# --- inputs ------------------------------------------------------------------------------


def _require_scipy_spatial() -> Any:
    try:
        import scipy.spatial
    except ImportError:
        raise missing_extra("Surface distances (hd95, assd, nsd) need scipy", "metrics") from None
    return scipy.spatial


def _label_maps(prediction: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    prediction_map = _label_map(prediction, "prediction")
    truth_map = _label_map(truth, "truth")
    if prediction_map.shape != truth_map.shape:
        raise ValueError(
            "prediction and truth must have the same shape; got "
            f"{prediction_map.shape} and {truth_map.shape}"
        )
    return prediction_map, truth_map


def _label_map(mask: Any, role: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim not in (2, 3):
        raise ValueError(
            f"The {role} must be a 2-D image (H, W) or a 3-D volume (D, H, W) label map; "
            f"got an array of shape {array.shape}"
        )
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        return array
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array).all() and (array.size == 0 or np.abs(array).max() < 2**31)
        if not finite or not np.array_equal(array, np.round(array)):
            raise ValueError(
                f"The {role} must hold whole-number labels (0 for background, below 2**31); it "
                "holds fractional, non-finite or huge values: threshold probabilities (or "
                "take the argmax over classes) first"
            )
        return array.astype(np.int64)
    raise ValueError(
        f"The {role} must be a boolean mask or an integer label map; got dtype {array.dtype}"
    )


def _binary_pair(prediction: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    prediction_map, truth_map = _label_maps(prediction, truth)
    return prediction_map != 0, truth_map != 0


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _spacing(spacing: Any, ndim: int) -> tuple[float, ...]:
    """Voxel size per axis in mm: positive, finite, one per axis (or one for all)."""
    if spacing is None:
        return (1.0,) * ndim
    values = [spacing] * ndim if _is_number(spacing) else spacing
    try:
        scale = tuple(float(v) for v in values if _is_number(v))
        count = len(values)
    except TypeError:
        scale, count = (), -1
    if count != ndim or len(scale) != ndim or not all(math.isfinite(v) and v > 0 for v in scale):
        raise ValueError(
            f"spacing must be one positive number or {ndim} positive numbers (mm per voxel "
            f"along each axis of the {ndim}-D masks); got {spacing!r}"
        )
    return scale


def _named_labels(labels: Any, prediction_map: np.ndarray, truth_map: np.ndarray) -> dict[int, str]:
    if labels is None:
        values = np.union1d(_present(prediction_map), _present(truth_map))
        return {int(v): str(int(v)) for v in values if v != 0}
    if isinstance(labels, Mapping):
        pairs = [(_label_value(key), value) for key, value in labels.items()]
    elif isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise ValueError(
            "labels must be a {value: name} mapping or a sequence of label values; got "
            f"{labels!r}"
        )
    else:
        pairs = [(_label_value(value), None) for value in labels]
    named: dict[int, str] = {}
    for value, name in pairs:
        if value == 0:
            continue
        if name is not None and not isinstance(name, str):
            raise ValueError(f"label names must be strings; label {value} is named {name!r}")
        label_name = str(value) if name is None else name
        if label_name in named.values() or value in named:
            raise ValueError(f"labels must name each value once and each name once; got {labels!r}")
        named[value] = label_name
    return dict(sorted(named.items()))


def _present(label_map: np.ndarray) -> np.ndarray:
    if label_map.dtype == bool:
        return np.array([1]) if label_map.any() else np.array([], dtype=np.int64)
    return np.unique(label_map)


def _label_value(key: Any) -> int:
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key)
    raise ValueError(
        "A label must be an integer value (or its digits as a string, as in dataset.json); "
        f"got {key!r}"
    )


def _tolerances(tolerance_mm: Any, named: Mapping[int, str]) -> dict[int, float]:
    if not isinstance(tolerance_mm, Mapping):
        tolerance = _checked_tolerance(tolerance_mm, "tolerance_mm")
        return dict.fromkeys(named, tolerance)
    by_name = {name: value for value, name in named.items()}
    tolerances: dict[int, float] = {}
    for key, mm in tolerance_mm.items():
        value = by_name.get(key) if isinstance(key, str) and key in by_name else None
        if value is None:
            value = _label_value(key)
        tolerances[value] = _checked_tolerance(mm, f"tolerance_mm[{key!r}]")
    missing = [name for value, name in named.items() if value not in tolerances]
    if missing:
        raise ValueError(
            f"tolerance_mm must give a tolerance for every label, and gives none for the labels "
            f"{missing}: give one number for all labels or one for each"
        )
    return tolerances


def _checked_tolerance(value: Any, what: str) -> float:
    if not _is_number(value) or not math.isfinite(float(value)) or float(value) < 0:
        raise ValueError(f"{what} must be a finite number of mm, 0 or more; got {value!r}")
    return float(value)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The box around ``mask``'s voxels with a margin of one (inside the array), or None."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        occupied = np.flatnonzero(np.any(mask, axis=others))
        if occupied.size == 0:
            return None
        box.append(
            slice(max(int(occupied[0]) - 1, 0), min(int(occupied[-1]) + 2, mask.shape[axis]))
        )
    return tuple(box)


def _metrics_of(cases: Sequence[Mapping[str, Mapping[str, float]]]) -> list[str]:
    metrics: list[str] = []
    for case in cases:
        for row in case.values():
            metrics.extend(metric for metric in row if metric not in metrics)
    return metrics


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _mean(values: Iterable[float]) -> float:
    kept = [float(v) for v in values if not math.isnan(float(v))]
    return math.fsum(kept) / len(kept) if kept else math.nan
