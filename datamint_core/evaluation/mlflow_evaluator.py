"""The ``datamint`` MLflow evaluator, for ``model_type="datamint-segmentation"``.

Registered through MLflow's ``mlflow.model_evaluator`` entry point (``pyproject.toml``), so
installing datamint is enough::

    import mlflow
    import pandas as pd

    data = pd.DataFrame({
        "id": ["liver_001", "liver_002"],
        "kind": ["volume", "volume"],
        "path": ["imagesTr/liver_001.nii.gz", "imagesTr/liver_002.nii.gz"],
        "label": ["labelsTr/liver_001.nii.gz", "labelsTr/liver_002.nii.gz"],
    })
    with mlflow.start_run():
        result = mlflow.models.evaluate(
            "models:/liver-seg/3", data, targets="label",
            model_type="datamint-segmentation",
            evaluator_config={"labels": {"1": "liver"}, "tolerance_mm": 2.0,
                              "params": {"mode": "volume"}},
        )
    result.metrics["dice/liver"]

``data``: one row per case: the resource fields the model takes (``path`` with ``kind``, or
``pixel_data``; optionally ``id``, ``spacing``, ``affine``, ``modality``) and the reference
label map in the ``targets`` column (``label`` when ``targets`` is not given): a path to a
label file (any format :func:`datamint_core.io.read` reads; its spacing is used) or an
array (the row's ``spacing``, else 1 mm). ``evaluation_data(project)`` builds this frame for
a project directory. Without a model, a ``predictions`` column holds each case's
annotations (objects or their JSON dicts).

``evaluator_config``: ``labels`` (``{value: name}``, or nnU-Net's ``{name: value}``; or
``project``: a project whose dataset.json names them), ``tolerance_mm`` (1), ``params``
(prediction params), ``worst_cases`` (how many to draw, 3).

Logged into the run: the summary metrics (``dice``, ``dice/liver``, …: MONAI's ``mean`` and
``mean_batch`` reductions) and ``cases_scored``/``cases_failed``; each case's mean metrics
as ``case/dice`` etc. at step = the case's row number; the per-case table
(``datamint_evaluation/per_case_metrics.json`` via ``log_table`` and ``.csv``); and
``datamint_evaluation/worst_cases.png``: the worst cases (lowest Dice) with the reference
and predicted masks drawn over the image.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric
from mlflow.models.evaluation.base import EvaluationResult, ModelEvaluator

from datamint_core._extras import missing_extra
from datamint_core.errors import EvaluationInputError
from datamint_core.evaluation._cases import labels_from_file, parse_labels, project_cases
from datamint_core.evaluation._score import (
    MODEL_TYPE,
    columns,
    failed_row,
    ok_row,
    score_case,
    summary,
)
from datamint_core.wire import as_resources, is_missing

_logger = logging.getLogger(__name__)

ARTIFACT_DIR = "datamint_evaluation"
_DEFAULT_TARGETS = "label"
_CONFIG_KEYS = ("labels", "project", "tolerance_mm", "params", "worst_cases")


def evaluation_data(project: str | os.PathLike[str]) -> Any:
    """The ``data`` frame of a project's labelled cases (``id``, ``kind``, ``path``, ``label``)."""
    import pandas as pd

    cases, _ = project_cases(project)
    several = [case["id"] for case in cases if len(case["images"]) != 1]
    if several:
        raise EvaluationInputError(
            f"evaluation_data builds one image file per case; the cases {several[:3]} of "
            f"{os.fspath(project)!r} have one file per channel: evaluate them with "
            "`datamint evaluate --project` (or a frame of your own with pixel_data)."
        )
    return pd.DataFrame({
        "id": [case["id"] for case in cases],
        "kind": ["volume"] * len(cases),
        "path": [case["images"][0] for case in cases],
        "label": [case["label"] for case in cases],
    })


class DatamintSegmentationEvaluator(ModelEvaluator):
    """Scores a segmentation model's masks against reference label maps (see the module)."""

    name = "datamint"

    @classmethod
    def can_evaluate(cls, *, model_type: str | None, evaluator_config: Any, **kwargs: Any) -> bool:
        return model_type == MODEL_TYPE

    def evaluate(
        self,
        *,
        model_type: str,
        dataset: Any,
        run_id: str,
        evaluator_config: Mapping[str, Any] | None,
        model: Any = None,
        extra_metrics: Any = None,
        custom_artifacts: Any = None,
        predictions: Any = None,
        **kwargs: Any,
    ) -> EvaluationResult:
        import pandas as pd
        from mlflow.tracking import MlflowClient

        if extra_metrics or custom_artifacts:
            raise EvaluationInputError(
                "The datamint evaluator computes its own segmentation metrics and artifacts; "
                "extra_metrics and custom_artifacts are not taken (got "
                f"{len(extra_metrics or [])} extra metric(s), "
                f"{len(custom_artifacts or [])} custom artifact(s))."
            )
        config = _checked_config(evaluator_config)
        labels = config["labels"]
        features, targets, given = _split(dataset, model)
        rows: list[dict[str, Any]] = []
        worst: list[tuple[float, str, Any, list, np.ndarray]] = []
        for index in range(len(features)):
            case_id = str(_cell(features, index, "id", index))
            try:
                # As the pyfunc scoring path reads a DataFrame row (lists, NaN for missing).
                (resource,) = as_resources(features.iloc[[index]])
                annotations = (_given_annotations(given[index]) if given is not None
                               else _predict(model, resource, config["params"]))
                truth, spacing = _reference(targets[index], resource)
                metrics, unmatched = score_case(annotations, truth, labels, spacing=spacing,
                                                tolerance_mm=config["tolerance_mm"])
            except Exception as error:  # a case's failure is recorded, and the evaluation goes on
                rows.append(failed_row(case_id, error))
                continue
            row = ok_row(case_id, metrics, spacing=spacing, unmatched=unmatched)
            rows.append(row)
            _keep_worst(worst, config["worst_cases"],
                        (row.get("dice", math.nan), case_id, resource, annotations, truth))
        content = summary(rows, labels, config["tolerance_mm"])
        client = MlflowClient()
        table = pd.DataFrame(rows, columns=columns(labels))
        self._log(client, run_id, content, rows, table, worst, labels)
        metrics = {**content["metrics"], "cases_scored": float(content["scored"]),
                   "cases_failed": float(content["failed"])}
        return EvaluationResult(metrics=metrics, artifacts=self._artifacts(client, run_id, table,
                                                                           bool(worst)),
                                run_id=run_id)

    def _log(self, client: Any, run_id: str, content: Mapping[str, Any], rows: list[dict],
             table: Any, worst: list, labels: Mapping[int, str]) -> None:
        import time

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, 0) for key, value in content["metrics"].items()]
        metrics += [Metric("cases_scored", float(content["scored"]), now, 0),
                    Metric("cases_failed", float(content["failed"]), now, 0)]
        for step, row in enumerate(rows):
            metrics += [Metric(f"case/{name}", float(row[name]), now, step)
                        for name in ("dice", "iou", "hd95", "assd", "nsd") if name in row]
        for start in range(0, len(metrics), 1000):  # MLflow's log_batch takes 1000 at a time
            client.log_batch(run_id, metrics=metrics[start:start + 1000])
        client.log_table(run_id, data=table, artifact_file=f"{ARTIFACT_DIR}/per_case_metrics.json")
        with tempfile.TemporaryDirectory() as directory:
            table.to_csv(Path(directory) / "per_case_metrics.csv", index=False)
            from datamint_core.evaluation._score import write_summary

            write_summary(Path(directory) / "summary.json", content)
            if worst:
                _draw_worst(sorted(worst, key=_badness), labels,
                            Path(directory) / "worst_cases.png")
            client.log_artifacts(run_id, directory, ARTIFACT_DIR)

    def _artifacts(self, client: Any, run_id: str, table: Any, drawn: bool) -> dict[str, Any]:
        from mlflow.models.evaluation.artifacts import (
            CsvEvaluationArtifact,
            ImageEvaluationArtifact,
        )

        root = client.get_run(run_id).info.artifact_uri.rstrip("/") + f"/{ARTIFACT_DIR}"
        artifacts: dict[str, Any] = {
            "per_case_metrics": CsvEvaluationArtifact(f"{root}/per_case_metrics.csv", table)
        }
        if drawn:
            artifacts["worst_cases"] = ImageEvaluationArtifact(f"{root}/worst_cases.png")
        return artifacts


def _checked_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    config = dict(config or {})
    unknown = sorted(set(config) - set(_CONFIG_KEYS))
    if unknown:
        raise EvaluationInputError(
            f"Unknown evaluator_config key(s) {unknown} for the datamint evaluator; accepted: "
            f"{list(_CONFIG_KEYS)}."
        )
    if "labels" in config and "project" in config:
        raise EvaluationInputError("Give evaluator_config 'labels' or 'project', not both.")
    if "labels" in config:
        labels = config["labels"]
        if isinstance(labels, (str, os.PathLike)):
            config["labels"] = labels_from_file(labels)
        elif isinstance(labels, Mapping):
            config["labels"] = parse_labels(labels)
        else:
            raise EvaluationInputError(
                f"evaluator_config 'labels' must be {{value: name}} or a dataset.json path; got "
                f"{labels!r}."
            )
    elif "project" in config:
        config["labels"] = project_cases(config["project"])[1]
    else:
        raise EvaluationInputError(
            "The datamint evaluator needs the label names the model's masks are matched to: "
            "evaluator_config={'labels': {'1': 'liver', ...}} or {'project': PROJECT_DIR}."
        )
    tolerance = config.get("tolerance_mm", 1.0)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (
        math.isfinite(tolerance) and tolerance >= 0
    ):
        raise EvaluationInputError(
            f"evaluator_config 'tolerance_mm' must be a number of mm, 0 or more; got {tolerance!r}."
        )
    config["tolerance_mm"] = float(tolerance)
    params = config.get("params") or {}
    if not isinstance(params, Mapping):
        raise EvaluationInputError(
            f"evaluator_config 'params' must be a dict of prediction params; got {params!r}."
        )
    config["params"] = dict(params)
    worst = config.get("worst_cases", 3)
    if isinstance(worst, bool) or not isinstance(worst, int) or worst < 0:
        raise EvaluationInputError(
            f"evaluator_config 'worst_cases' must be a whole number, 0 or more; got {worst!r}."
        )
    config["worst_cases"] = worst
    return config


def _split(dataset: Any, model: Any) -> tuple[Any, list[Any], list[Any] | None]:
    """(features frame, reference per row, given predictions per row or None)."""
    features = dataset.features_data
    if not hasattr(features, "iloc"):
        raise EvaluationInputError(
            "The datamint evaluator takes `data` as a pandas DataFrame with one row per case "
            "(resource fields and a label column); got "
            f"{type(features).__name__}."
        )
    targets = dataset.labels_data
    if targets is None:
        if _DEFAULT_TARGETS not in features.columns:
            raise EvaluationInputError(
                "No reference labels: give each case's label map in a column and name it with "
                f"targets= (default column: {_DEFAULT_TARGETS!r})."
            )
        targets = features[_DEFAULT_TARGETS]
        features = features.drop(columns=[_DEFAULT_TARGETS])
    given = None
    if model is None:
        given = dataset.predictions_data
        if given is None:
            raise EvaluationInputError(
                "Without a model, give each case's annotations in a predictions column "
                "(predictions='...')."
            )
        given = list(given)
    return features, list(targets), given


def _cell(frame: Any, index: int, column: str, default: Any) -> Any:
    if column not in frame.columns:
        return default
    value = frame.iloc[index][column]
    return default if is_missing(value) else value


def _predict(model: Any, resource: Any, params: Mapping[str, Any]) -> list:
    """The model's annotations for one resource (one case in memory at a time)."""
    unwrap = getattr(model, "unwrap_python_model", None)
    python_model = None
    if unwrap is not None:
        try:
            python_model = unwrap()
        except Exception:  # not a PythonModel-based pyfunc: predict through pyfunc below
            python_model = None
    from datamint_core.model import BaseDatamintModel

    if isinstance(python_model, BaseDatamintModel):
        (annotations,) = python_model.predict([resource], dict(params))
    else:
        (annotations,) = model.predict([resource.to_dict()], params=dict(params) or None)
    return _given_annotations(annotations)


def _given_annotations(annotations: Any) -> list:
    from datamint_core.annotations import Annotation

    if isinstance(annotations, str):
        import json

        annotations = json.loads(annotations)
    return [a if isinstance(a, Annotation) else Annotation.from_dict(a) for a in annotations]


def _reference(target: Any, resource: Any) -> tuple[np.ndarray, Any]:
    """The reference label map and its spacing: the label file's, else the image's."""
    if isinstance(target, (str, os.PathLike)):
        from datamint_core.io import read

        reference = read(target)
        spacing = getattr(reference, "spacing", None) or getattr(resource, "spacing", None)
        return reference.pixels, spacing
    return np.asarray(target), getattr(resource, "spacing", None)


def _badness(entry: tuple) -> tuple[int, float]:
    dice = entry[0]
    return (1, 0.0) if math.isnan(dice) else (0, dice)


def _keep_worst(worst: list, count: int, entry: tuple) -> None:
    """Keep the ``count`` cases with the lowest Dice (``nan`` ones last) seen so far."""
    if count == 0:
        return
    worst.append(entry)
    worst.sort(key=_badness)
    del worst[count:]


def _titled(image: Any, title: str) -> Any:
    from PIL import Image, ImageDraw, ImageFont

    titled = Image.new("RGB", (image.width, image.height + 22))
    ImageDraw.Draw(titled).text((6, 4), title, fill=(255, 255, 255),
                                font=ImageFont.load_default())
    titled.paste(image, (0, 22))
    return titled


def _most_wrong_slice(truth: np.ndarray, annotations: list, labels: Mapping[int, str]) -> Any:
    """The axial slice of a volume where prediction and reference disagree most (``None``
    for an image, or where the masks are not whole volumes: the busiest slice is drawn)."""
    from datamint_core.annotations import SegmentationAnnotation

    if truth.ndim != 3:
        return None
    wrong = np.zeros(truth.shape[0], dtype=np.int64)
    for value, name in labels.items():
        predicted = np.zeros(truth.shape, dtype=bool)
        for annotation in annotations:
            if isinstance(annotation, SegmentationAnnotation) and annotation.identifier == name:
                if annotation.mask.shape != truth.shape:
                    return None
                predicted |= annotation.mask
        wrong += (predicted ^ (truth == value)).reshape(truth.shape[0], -1).sum(axis=1)
    return int(np.argmax(wrong)) if wrong.any() else None


def _draw_worst(worst: list, labels: Mapping[int, str], path: Path) -> None:
    """One picture: each worst case's most wrong slice, reference and prediction over it."""
    try:
        from PIL import Image
    except ImportError:
        _logger.warning("No worst-cases picture: %s", missing_extra("it needs Pillow", "images"))
        return
    from datamint_core.annotations import SegmentationAnnotation
    from datamint_core.io.writers import write_overlay_png

    pictures = []
    with tempfile.TemporaryDirectory() as directory:
        for number, (dice, case_id, resource, annotations, truth) in enumerate(worst):
            drawn = []
            for value, name in labels.items():
                reference = truth == value
                if reference.any():
                    scope = "volume" if reference.ndim == 3 else "image"
                    drawn.append(SegmentationAnnotation(f"reference {name}", reference,
                                                        scope=scope))
            for annotation in annotations:
                if isinstance(annotation, SegmentationAnnotation):
                    drawn.append(
                        annotation.with_fields(identifier=f"predicted {annotation.identifier}")
                    )
            picture = Path(directory) / f"{number}.png"
            write_overlay_png(resource, drawn, picture,
                              slice_index=_most_wrong_slice(truth, annotations, labels))
            with Image.open(picture) as image:
                pictures.append(_titled(image.convert("RGB"), f"{case_id}: Dice {dice:.3f}"))
    width = sum(p.width for p in pictures)
    height = max(p.height for p in pictures)
    canvas = Image.new("RGB", (width, height))
    left = 0
    for picture in pictures:
        canvas.paste(picture, (left, 0))
        left += picture.width
    canvas.save(path, format="PNG", optimize=True)
