"""Evaluate segmentation models: per-case and summary metrics against reference labels.

Three ways in, one scoring (:mod:`datamint_core.metrics`, equal to MONAI's):

- ``evaluate_predictions(batch_output, labels_dir_or_manifest, output, labels)``: score a
  ``datamint batch`` output; ``evaluate_project(model_uri, project, output)``: predict on a
  project's labelled images with the batch engine, then score. Both write
  ``OUTPUT/metrics.csv`` (one row per case) and ``OUTPUT/summary.json``. The command line:
  ``datamint evaluate``.
- ``mlflow.models.evaluate(model_uri, data, model_type="datamint-segmentation")``: the MLflow
  evaluator plugin (:mod:`datamint_core.evaluation.mlflow_evaluator`), logging the metrics,
  the per-case table and a picture of the worst cases into the run.

Example::

    from datamint_core.evaluation import evaluate_project

    report = evaluate_project("models:/liver-seg/3", "/data/Task03_Liver", "/data/eval",
                              {"mode": "volume"}, tolerance_mm=2.0)
    print(report.metrics["dice/liver"])
"""

from datamint_core.errors import EvaluationInputError
from datamint_core.evaluation._cases import (
    case_key,
    labels_from_file,
    parse_labels,
    project_cases,
)
from datamint_core.evaluation._run import EvaluationReport, evaluate_predictions, evaluate_project
from datamint_core.evaluation._score import MODEL_TYPE

__all__ = [
    "MODEL_TYPE",
    "EvaluationInputError",
    "EvaluationReport",
    "case_key",
    "evaluate_predictions",
    "evaluate_project",
    "labels_from_file",
    "parse_labels",
    "project_cases",
]
