"""Score one case (a model's annotations against a reference label map) and write the tables.

A per-case row (one per case, what ``metrics.csv`` and the MLflow table hold)::

    {"id": "liver_003", "status": "ok", "error": None, "spacing": "2.5 0.8 0.8",
     "unmatched": "", "dice": 0.91, ..., "nsd": 0.88,            # mean over the labels
     "dice/liver": 0.95, ..., "nsd/tumour": 0.71}                  # each label

Predicted masks are matched to reference labels by name: an annotation whose
``identifier`` is ``"liver"`` is label ``1`` where the labels say ``{1: "liver"}``. The
masks of a label name are merged (their union); identifiers that name no label are listed
in ``unmatched``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from datamint_core._files import write_atomically
from datamint_core.annotations import Annotation, SegmentationAnnotation
from datamint_core.metrics import METRIC_NAMES, case_mean, segmentation_metrics, summarize_metrics

#: The ``model_type`` of ``mlflow.models.evaluate`` that the datamint evaluator handles.
MODEL_TYPE = "datamint-segmentation"
STATUS_OK = "ok"
STATUS_FAILED = "failed"
#: The columns every per-case row starts with; the metric columns follow.
BASE_COLUMNS = ("id", "status", "error", "spacing", "unmatched")


def score_case(
    annotations: Sequence[Annotation],
    truth: np.ndarray,
    labels: Mapping[int, str],
    *,
    spacing: Sequence[float] | None,
    tolerance_mm: float | Mapping[Any, float],
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Every metric of each label for one case.

    Args:
        annotations: the model's annotations for the case (non-segmentation ones are ignored).
        truth: the reference label map, 2-D or 3-D.
        labels: ``{value: name}`` of the reference's labels (background left out).
        spacing: the voxel size in mm along the label map's axes (``None``: 1 mm).
        tolerance_mm: the normalized surface Dice's tolerance.

    Returns:
        ``({label name: {metric: value}}, unmatched identifiers)``.

    Raises:
        ValueError: a mask that does not fit the reference's shape.
    """
    value_of = {name: value for value, name in labels.items()}
    predicted = np.zeros(truth.shape, dtype=np.min_scalar_type(max([0, *labels])))
    unmatched: list[str] = []
    for annotation in annotations:
        if not isinstance(annotation, SegmentationAnnotation):
            continue
        value = value_of.get(annotation.identifier)
        if value is None:
            if annotation.identifier not in unmatched:
                unmatched.append(annotation.identifier)
            continue
        _place(predicted, annotation)[annotation.mask] = value
    metrics = segmentation_metrics(
        predicted, truth, labels=labels, spacing=spacing, tolerance_mm=tolerance_mm
    )
    return metrics, unmatched


def _place(label_map: np.ndarray, annotation: SegmentationAnnotation) -> np.ndarray:
    """The part of ``label_map`` a mask covers: the whole map, or its slice of a volume."""
    mask = annotation.mask
    if mask.shape == label_map.shape:
        return label_map
    if label_map.ndim == 3 and mask.ndim == 2 and annotation.slice_index is not None:
        axis = {"axial": 0, "coronal": 1, "sagittal": 2}[annotation.slice_axis or "axial"]
        if 0 <= annotation.slice_index < label_map.shape[axis]:
            key: list[Any] = [slice(None)] * 3
            key[axis] = annotation.slice_index
            target = label_map[tuple(key)]
            if target.shape == mask.shape:
                return target
    raise ValueError(
        f"The predicted mask {annotation.identifier!r} of shape {mask.shape} does not fit the "
        f"reference label map of shape {label_map.shape}; accepted: masks of the reference's "
        "shape, or slice masks with their slice_index."
    )


def ok_row(
    case_id: str,
    metrics: Mapping[str, Mapping[str, float]],
    *,
    spacing: Sequence[float] | None,
    unmatched: Sequence[str] = (),
) -> dict[str, Any]:
    """The per-case row of a scored case."""
    row: dict[str, Any] = {
        "id": case_id,
        "status": STATUS_OK,
        "error": None,
        "spacing": None if spacing is None else " ".join(f"{s:g}" for s in spacing),
        "unmatched": " ".join(unmatched),
    }
    row.update(case_mean(metrics))
    for metric in METRIC_NAMES:
        for name, values in metrics.items():
            row[f"{metric}/{name}"] = values[metric]
    return row


def failed_row(case_id: str, error: BaseException | str) -> dict[str, Any]:
    """The per-case row of a case that could not be scored, with its error."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {"id": case_id, "status": STATUS_FAILED, "error": text, "spacing": None,
            "unmatched": ""}


def case_metrics(row: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """A scored row's ``{label: {metric: value}}`` back (what summaries average)."""
    metrics: dict[str, dict[str, float]] = {}
    for key, value in row.items():
        metric, separator, name = key.partition("/")
        if separator and metric in METRIC_NAMES:
            metrics.setdefault(name, {})[metric] = float(value)
    return metrics


def columns(labels: Mapping[int, str]) -> list[str]:
    """The per-case table's columns, for these labels."""
    names = list(labels.values())
    return [*BASE_COLUMNS, *METRIC_NAMES,
            *(f"{metric}/{name}" for metric in METRIC_NAMES for name in names)]


def summary(
    rows: Sequence[Mapping[str, Any]],
    labels: Mapping[int, str],
    tolerance_mm: float | Mapping[Any, float],
) -> dict[str, Any]:
    """The summary of a whole evaluation (what ``summary.json`` holds)."""
    scored = [row for row in rows if row["status"] == STATUS_OK]
    return {
        "cases": len(rows),
        "scored": len(scored),
        "failed": len(rows) - len(scored),
        "labels": {str(value): name for value, name in labels.items()},
        "tolerance_mm": tolerance_mm if not isinstance(tolerance_mm, Mapping) else {
            str(key): value for key, value in tolerance_mm.items()
        },
        "metrics": summarize_metrics(case_metrics(row) for row in scored),
        "failures": {row["id"]: row["error"] for row in rows if row["status"] != STATUS_OK},
    }


def write_table(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]],
                header: Sequence[str]) -> None:
    """Write the per-case rows as CSV (``nan`` and ``inf`` as Python writes them)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(header), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    _write_text(path, buffer.getvalue())


def write_summary(path: str | os.PathLike[str], content: Mapping[str, Any]) -> None:
    """Write the summary as strict JSON: ``nan`` as ``null``, infinities as ``"inf"``."""
    _write_text(path, json.dumps(_json_safe(content), indent=2, allow_nan=False) + "\n")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, Mapping):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _write_text(path: str | os.PathLike[str], text: str) -> None:
    write_atomically(path, text)
