"""``evaluate_project`` with the Spark engine predicting: the same scores as the local one."""

from __future__ import annotations

import csv

import pytest

from datamint_core import save_model
from datamint_core.evaluation import evaluate_project
from tests.core.evaluation_models import LabelMapSegmenter, make_project
from tests.core.test_evaluation import expected_metrics


def test_a_project_predicted_on_spark_scores_as_the_metrics_module_does(spark, tmp_path):
    project = make_project(tmp_path / "Task01_Generated")
    model = tmp_path / "segmenter"
    save_model(LabelMapSegmenter(), model)

    report = evaluate_project(str(model), project, tmp_path / "out", {"mode": "volume"},
                              tolerance_mm=1.5, engine="spark", spark=spark, workers=1)

    assert report.ok and report.scored == 3
    with open(tmp_path / "out" / "metrics.csv", newline="") as file:
        rows = {row["id"]: row for row in csv.DictReader(file)}
    for case, row in rows.items():
        for name, values in expected_metrics(project, case).items():
            for metric, value in values.items():
                assert float(row[f"{metric}/{name}"]) == pytest.approx(value, nan_ok=True)
