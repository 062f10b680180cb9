"""The Spark engine and ``mlflow.pyfunc.spark_udf``, on a real local Spark."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow.pyfunc
import pandas as pd  # at module level: Spark resolves the pandas_udf's type hints here
import pytest

from datamint_core import save_model
from datamint_core.batch import read_results, run_batch
from datamint_core.io import read
from tests.core.batch_models import UNREADABLE, TwoLabelModel, make_studies
from tests.core.test_batch import assert_matches_in_process_predict, expected_annotations


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spark") / "two-label"
    save_model(TwoLabelModel(), path)
    return path


def test_spark_engine_gives_in_process_annotations_failed_rows_and_resumes(
    spark, spark_load_log, model_path, tmp_path
):
    directory = tmp_path / "cohort"
    studies = make_studies(directory)
    unreadable = len(UNREADABLE)
    loads_before = spark_load_log.read_text().split() if spark_load_log.exists() else []
    output = tmp_path / "out"

    report = run_batch(str(model_path), directory, output, engine="spark", spark=spark)
    rerun = run_batch(str(model_path), directory, output, engine="spark", spark=spark)

    assert (report.total, report.succeeded, report.failed) == (
        len(studies) + unreadable,
        len(studies),
        unreadable,
    )
    assert (rerun.skipped, rerun.succeeded, rerun.failed) == (len(studies), 0, unreadable)
    bad = assert_matches_in_process_predict(
        output, expected_annotations(model_path, studies), set(UNREADABLE)
    )
    assert "it is not a .npy file" in bad.error["corrupt.npy"]
    assert not [p for p in output.iterdir() if p.name.startswith("_pending-")]
    # Each executor Python worker loaded the model once, however many tasks it ran.
    loads = spark_load_log.read_text().split()[len(loads_before) :]
    worker_loads = [pid for pid in loads if int(pid) != os.getpid()]
    assert worker_loads and len(worker_loads) == len(set(worker_loads))
    assert len(read_results(output)) == report.total


def test_spark_udf_returns_every_annotation_of_every_row_as_json(spark, model_path, tmp_path):
    from pyspark.sql.functions import col, struct

    # One spark_udf batch goes to predict at once, and mode "default" needs one kind per call.
    # Every volume among the studies (arrays, DICOM series, NIfTI), read on the executors.
    studies = {
        name: path
        for name, path in make_studies(tmp_path / "cohort", count=8).items()
        if read(path).kind == "volume"
    }
    rows = [
        (name, "volume", str(path), json.dumps({"source": name})) for name, path in studies.items()
    ]
    frame = spark.createDataFrame(rows, "id string, kind string, path string, metadata string")
    udf = mlflow.pyfunc.spark_udf(
        spark,
        str(model_path),
        result_type="string",
        params={"result_format": "json"},
        extra_env={"DATAMINT_SERVE_ALLOW_PATH_DIRS": str(tmp_path / "cohort")},
    )

    scored = frame.withColumn("annotations", udf(struct(*[col(c) for c in frame.columns])))
    got = {row.id: json.loads(row.annotations) for row in scored.collect()}

    expected = expected_annotations(model_path, studies)
    assert got == {
        name: [annotation.to_dict() for annotation in annotations]
        for name, annotations in expected.items()
    }
    assert all(len(annotations) >= 2 for annotations in got.values())
    assert {a["identifier"] for annotations in got.values() for a in annotations} == {
        "bright",
        "contrast",
    }


def test_pyfunc_predict_gives_the_same_lists_inside_a_users_own_pandas_udf_and_json_on_request(
    spark, model_path
):
    import numpy as np
    from pyspark.sql.functions import pandas_udf

    from datamint_core import ImageResource

    record = ImageResource(np.linspace(0, 1, 64).reshape(8, 8), id="img").to_dict()
    model_uri = str(model_path)
    outside = mlflow.pyfunc.load_model(model_uri).predict([record], {"mode": "image"})

    @pandas_udf("string")
    def score(ids: pd.Series) -> pd.Series:
        model = mlflow.pyfunc.load_model(model_uri)
        answers = []
        for _ in ids:
            lists = model.predict([record], {"mode": "image"})
            texts = model.predict([record], {"mode": "image", "result_format": "json"})
            answers.append(json.dumps({"lists": lists, "texts": texts}))
        return pd.Series(answers)

    (row,) = spark.range(1).select(score("id").alias("answer")).collect()
    inside = json.loads(row.answer)

    assert isinstance(outside, list) and isinstance(outside[0], list)
    assert isinstance(outside[0][0], dict) and len(outside[0]) == 2
    assert inside["lists"] == outside  # lists of dicts, not JSON strings, inside a task too
    assert inside["texts"] == [json.dumps(outside[0], allow_nan=False)]
    with pytest.raises(mlflow.exceptions.MlflowException, match="'result_format'='xml'"):
        mlflow.pyfunc.load_model(model_uri).predict([record], {"result_format": "xml"})
