"""``datamint evaluate`` and the MLflow evaluator plugin, on a generated project with a real
model, the real batch engine and a real SQLite tracking store.

``mlflow.models.evaluate`` needs the full mlflow: mlflow-skinny ships the module, but
registering MLflow's built-in evaluators imports scikit-learn. The evaluator's tests run in
the full environment (``scripts/test`` runs tests/core there too).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from datamint_core import EvaluationInputError, save_model
from datamint_core.cli import main
from datamint_core.evaluation import (
    case_key,
    evaluate_predictions,
    evaluate_project,
    parse_labels,
    project_cases,
)
from datamint_core.io import read
from datamint_core.metrics import METRIC_NAMES, segmentation_metrics
from tests.conftest import REPO_ROOT
from tests.core.evaluation_models import (
    LABELS,
    LabelMapSegmenter,
    expected_prediction,
    make_project,
    make_two_channel_project,
)

# Its outcome depends on what the environment holds (torch, Lightning, the full mlflow).
pytestmark = pytest.mark.both_envs


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("projects") / "Task01_Generated")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("evaluation") / "segmenter"
    save_model(LabelMapSegmenter(), path)
    return path


@pytest.fixture(scope="module")
def evaluated(project: Path, model_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """``datamint evaluate -m MODEL --project PROJECT``, run once for the module."""
    output = tmp_path_factory.mktemp("evaluated") / "out"
    code = main(["evaluate", "-m", str(model_path), "--project", str(project), "-o", str(output),
                 "--tolerance-mm", "1.5", "--workers", "2"])
    return code, output


def expected_metrics(project: Path, case: str) -> dict[str, dict[str, float]]:
    """What each case must score: the metrics of the known prediction, read as we read."""
    image = read(project / "imagesTr" / f"{case}_0000.nii.gz")
    labels = read(project / "labelsTr" / f"{case}.nii.gz")
    return segmentation_metrics(expected_prediction(image.pixels), labels.pixels,
                                labels=LABELS, spacing=labels.spacing, tolerance_mm=1.5)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_evaluate_on_a_project_scores_every_case_with_the_label_files_spacing(
    evaluated, project
):
    code, output = evaluated

    assert code == 0
    rows = read_rows(output / "metrics.csv")
    assert [row["id"] for row in rows] == ["case_000", "case_001", "case_002"]
    assert list(rows[0]) == [
        "id", "status", "error", "spacing", "unmatched", *METRIC_NAMES,
        *(f"{metric}/{name}" for metric in METRIC_NAMES for name in ("organ", "lesion")),
    ]
    for row in rows:
        assert row["status"] == "ok" and row["error"] == "" and row["unmatched"] == ""
        expected = expected_metrics(project, row["id"])
        for name, values in expected.items():
            for metric, value in values.items():
                assert float(row[f"{metric}/{name}"]) == pytest.approx(value, nan_ok=True), (
                    row["id"], metric, name)
    assert sorted(float(s) for s in rows[0]["spacing"].split()) == [0.7, 0.8, 2.5]
    perfect, moved, missed = rows
    assert float(perfect["dice"]) == 1.0 and float(perfect["hd95"]) == 0.0
    assert float(moved["dice/organ"]) < 1.0 and float(moved["hd95/organ"]) == pytest.approx(1.4)
    assert float(missed["dice/lesion"]) == 0.0 and float(missed["assd/lesion"]) == math.inf
    assert math.isnan(float(missed["hd95/lesion"]))  # MONAI's value for a missed structure


def test_the_summary_holds_monai_s_mean_reductions_and_the_run_s_settings(evaluated, project):
    _, output = evaluated
    summary = json.loads((output / "summary.json").read_text())

    assert summary["cases"] == summary["scored"] == 3 and summary["failed"] == 0
    assert summary["labels"] == {"1": "organ", "2": "lesion"}
    assert summary["tolerance_mm"] == 1.5
    cases = [expected_metrics(project, f"case_{i:03d}") for i in range(3)]
    organ_dice = [case["organ"]["dice"] for case in cases]
    assert summary["metrics"]["dice/organ"] == pytest.approx(np.mean(organ_dice))
    assert summary["metrics"]["assd/lesion"] == "inf"  # strict JSON: one case missed it
    assert summary["metrics"]["hd95/lesion"] == pytest.approx(
        np.mean([cases[0]["lesion"]["hd95"], cases[1]["lesion"]["hd95"]])
    )
    assert (output / "predictions").is_dir()


def test_evaluate_scores_a_batch_output_against_a_labels_directory(
    evaluated, project, tmp_path, capsys
):
    _, output = evaluated
    labels = tmp_path / "labels"
    labels.mkdir()
    for file in (project / "labelsTr").iterdir():
        (labels / file.name).write_bytes(file.read_bytes())
    # A labelled case the batch never predicted.
    (labels / "case_404.nii.gz").write_bytes((labels / "case_000.nii.gz").read_bytes())

    code = main(["evaluate", "--predictions", str(output / "predictions"), "--labels",
                 str(labels), "--labels-json", str(project / "dataset.json"), "-o",
                 str(tmp_path / "out"), "--tolerance-mm", "1.5", "--workers", "1"])

    assert code == 3
    assert "1 case(s) could not be scored" in capsys.readouterr().err
    rows = {row["id"]: row for row in read_rows(tmp_path / "out" / "metrics.csv")}
    assert rows["case_404"]["status"] == "failed"
    assert "no prediction" in rows["case_404"]["error"]
    first = read_rows(output / "metrics.csv")
    assert [rows[r["id"]]["dice/organ"] for r in first] == [r["dice/organ"] for r in first]


def test_predicted_names_that_match_no_label_are_reported(evaluated, project, tmp_path):
    _, output = evaluated

    report = evaluate_predictions(output / "predictions", project / "labelsTr", tmp_path,
                                  {1: "organ", 2: "tumour"}, workers=1)

    assert report.ok
    rows = read_rows(tmp_path / "metrics.csv")
    assert {row["unmatched"] for row in rows} == {"lesion"}
    assert all(float(row["dice/tumour"]) == 0.0 for row in rows)  # nothing named tumour


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "Give what to evaluate"),
        (["--project", "P"], "needs the model to evaluate: -m"),
        (["--project", "P", "-m", "M", "--labels", "L"], "not both"),
        (["--predictions", "P"], "--labels DIR_OR_MANIFEST"),
        (["--predictions", "P", "--labels", "L"], "--label VALUE=NAME"),
        (["--predictions", "P", "--labels", "L", "--label", "liver"], "is not VALUE=NAME"),
        (["--predictions", "P", "--labels", "L", "--label", "1=a", "-m", "M"], "go with --project"),
        (["--project", "no-such-project", "-m", "M"], "No project 'no-such-project'"),
        (["--predictions", "nowhere", "--labels", "nowhere", "--label", "1=a"],
         "Cannot list the labels"),
    ],
)
def test_cli_usage_errors_exit_2_and_say_what_is_accepted(arguments, message, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATAMINT_PROJECTS_DIR", raising=False)

    assert main(["evaluate", "-o", str(tmp_path / "out"), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_a_multi_channel_project_is_predicted_from_every_channel_file(model_path, tmp_path):
    project = make_two_channel_project(tmp_path / "Dataset002_Two")

    report = evaluate_project(str(model_path), project, tmp_path / "out", {"mode": "volume"},
                              tolerance_mm=1.5, workers=1)

    assert report.ok and report.scored == 2
    rows = read_rows(tmp_path / "out" / "metrics.csv")
    for row in rows:
        image = read(project / "imagesTr" / f"{row['id']}_0000.nii.gz")
        labels = read(project / "labelsTr" / f"{row['id']}.nii.gz")
        expected = segmentation_metrics(expected_prediction(image.pixels), labels.pixels,
                                        labels=LABELS, spacing=labels.spacing, tolerance_mm=1.5)
        for name, values in expected.items():
            for metric, value in values.items():
                assert float(row[f"{metric}/{name}"]) == pytest.approx(value, nan_ok=True)
    assert float(rows[0]["dice"]) == 1.0 and float(rows[1]["dice/organ"]) < 1.0


def test_projects_are_found_by_name_under_the_projects_directory(project, monkeypatch):
    monkeypatch.setenv("DATAMINT_PROJECTS_DIR", str(project.parent))

    cases, labels = project_cases(project.name)

    assert labels == LABELS
    assert [case["id"] for case in cases] == ["case_000", "case_001", "case_002"]
    assert cases[1]["label"].endswith("labelsTr/case_001.nii.gz")
    assert [Path(p).name for p in cases[1]["images"]] == ["case_001_0000.nii.gz"]


def test_nnunet_projects_pair_every_channel_file_with_its_label(tmp_path):
    (tmp_path / "labelsTr").mkdir()
    (tmp_path / "imagesTr").mkdir()
    for case in ("b", "a"):
        (tmp_path / "labelsTr" / f"{case}.nii.gz").write_bytes(b"")
        for channel in ("0000", "0001"):
            (tmp_path / "imagesTr" / f"{case}_{channel}.nii.gz").write_bytes(b"")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "zone": 3},
        "file_ending": ".nii.gz", "numTraining": 2,
    }))

    cases, labels = project_cases(tmp_path)

    assert labels == {3: "zone"}  # as the label files hold it
    assert [(c["id"], [Path(p).name for p in c["images"]], c["channels"]) for c in cases] == [
        ("a", ["a_0000.nii.gz", "a_0001.nii.gz"], ["T2", "ADC"]),
        ("b", ["b_0000.nii.gz", "b_0001.nii.gz"], ["T2", "ADC"]),
    ]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"1": 5}, "accepted: {value: name}"),
        ({"0": "background"}, "no foreground label"),
        ({"1": "a", "2": "a"}, "twice"),
        ({"liver": [1, 2]}, "one integer value per name"),
    ],
)
def test_bad_label_maps_say_which_forms_are_accepted(labels, message):
    with pytest.raises(EvaluationInputError) as raised:
        parse_labels(labels)
    assert message in str(raised.value)


def test_case_keys_drop_the_image_extension_and_the_nnunet_channel():
    assert case_key("liver_003.nii.gz") == case_key("liver_003_0000.nii.gz") == "liver_003"
    assert case_key("/data/imagesTr/ct.npy") == "ct"
    assert case_key("series-dir/") == "series-dir"


needs_full_mlflow = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None,
    reason="mlflow.models.evaluate needs the full mlflow (scikit-learn): the full environment",
)


def evaluator_entry_point(site: Path) -> Path:
    """Make pyproject.toml's mlflow.model_evaluator entry point visible to a new process.

    Entry points register when a distribution is installed; the shared development
    environment was installed before this one was declared, so the test writes the
    declaration, read from pyproject.toml itself, into a dist-info directory on the path.
    """
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    evaluators = pyproject["project"]["entry-points"]["mlflow.model_evaluator"]
    info = site / "datamint_evaluator_entry_points-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: datamint-evaluator-entry-points\nVersion: 0\n"
    )
    lines = "".join(f"{name} = {target}\n" for name, target in evaluators.items())
    (info / "entry_points.txt").write_text(f"[mlflow.model_evaluator]\n{lines}")
    return site


@needs_full_mlflow
def test_mlflow_evaluate_with_the_datamint_model_type_logs_metrics_table_and_picture(
    project, model_path, tmp_path, run_python
):
    site = evaluator_entry_point(tmp_path / "site")
    out = run_python(
        f"""
        import json, math
        import mlflow
        from mlflow.tracking import MlflowClient
        from datamint_core.evaluation.mlflow_evaluator import evaluation_data

        mlflow.set_tracking_uri("sqlite:///{tmp_path / 'mlflow.db'}")
        data = evaluation_data({str(project)!r})
        with mlflow.start_run() as run:
            result = mlflow.models.evaluate(
                {str(model_path)!r}, data, targets="label",
                model_type="datamint-segmentation",
                evaluator_config={{"project": {str(project)!r}, "tolerance_mm": 1.5,
                                   "params": {{"mode": "volume"}}, "worst_cases": 2}},
            )
        client = MlflowClient()
        logged = client.get_run(run.info.run_id).data.metrics
        history = client.get_metric_history(run.info.run_id, "case/dice")
        files = sorted(f.path for f in client.list_artifacts(run.info.run_id,
                                                             "datamint_evaluation"))
        print(json.dumps({{
            "evaluators": mlflow.models.list_evaluators(),
            "metrics": {{k: (v if math.isfinite(v) else str(v))
                        for k, v in result.metrics.items()}},
            "logged": {{k: (v if math.isfinite(v) else str(v)) for k, v in logged.items()}},
            "case_dice": [(m.step, m.value) for m in history],
            "files": files,
            "artifacts": sorted(result.artifacts),
            "table_rows": len(result.artifacts["per_case_metrics"].content),
            "failures": result.artifacts["per_case_metrics"].content["error"].tolist(),
        }}))
        """,
        env={"PYTHONPATH": str(site), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    report = json.loads(out.splitlines()[-1])
    assert report["metrics"]["cases_failed"] == 0, report["failures"]
    cases = [expected_metrics(project, f"case_{i:03d}") for i in range(3)]

    assert "datamint" in report["evaluators"]
    assert report["metrics"]["dice/organ"] == pytest.approx(
        np.mean([case["organ"]["dice"] for case in cases]))
    assert report["metrics"]["assd/lesion"] == "inf"
    assert report["metrics"]["cases_scored"] == 3 and report["metrics"]["cases_failed"] == 0
    assert report["logged"]["dice/organ"] == pytest.approx(report["metrics"]["dice/organ"])
    assert [step for step, _ in report["case_dice"]] == [0, 1, 2]
    assert report["case_dice"][0][1] == 1.0
    assert report["files"] == [
        "datamint_evaluation/per_case_metrics.csv",
        "datamint_evaluation/per_case_metrics.json",
        "datamint_evaluation/summary.json",
        "datamint_evaluation/worst_cases.png",
    ]
    assert report["artifacts"] == ["per_case_metrics", "worst_cases"]
    assert report["table_rows"] == 3


@needs_full_mlflow
def test_the_evaluator_scores_given_predictions_and_refuses_what_it_cannot_use(
    project, tmp_path, run_python
):
    site = evaluator_entry_point(tmp_path / "site")
    out = run_python(
        f"""
        import json
        import mlflow
        from datamint_core.evaluation.mlflow_evaluator import evaluation_data
        from datamint_core.io import read
        from tests.core.evaluation_models import LabelMapSegmenter

        mlflow.set_tracking_uri("sqlite:///{tmp_path / 'mlflow.db'}")
        data = evaluation_data({str(project)!r})
        # Without a model: each case's annotations, as JSON, in a predictions column.
        model = LabelMapSegmenter()
        data["predicted"] = [
            json.dumps([a.to_dict() for a in model.predict([read(path)], {{}})[0]])
            for path in data["path"]
        ]
        with mlflow.start_run():
            result = mlflow.models.evaluate(
                data=data, targets="label", predictions="predicted",
                model_type="datamint-segmentation",
                evaluator_config={{"labels": {{"1": "organ", "2": "lesion"}},
                                   "tolerance_mm": 1.5, "worst_cases": 0}})
        print("scored", result.metrics["cases_scored"], result.metrics["dice/organ"],
              sorted(result.artifacts))
        for config in ({{"tolrance": 1}}, {{}}, {{"labels": {{"1": "a"}}, "tolerance_mm": -1}}):
            try:
                with mlflow.start_run():
                    mlflow.models.evaluate(data=data, targets="label", predictions="predicted",
                                           model_type="datamint-segmentation",
                                           evaluators="datamint", evaluator_config=config)
            except Exception as error:
                print(type(error).__name__, error)
        """,
        env={"PYTHONPATH": str(site)},
    )
    cases = [expected_metrics(project, f"case_{i:03d}") for i in range(3)]
    scored, *refusals = out.strip().splitlines()[-4:]

    assert scored.startswith("scored 3.0 ")
    assert float(scored.split()[2]) == pytest.approx(np.mean([c["organ"]["dice"] for c in cases]))
    assert scored.endswith("['per_case_metrics']")  # worst_cases=0: no picture
    assert refusals[0].startswith(
        "EvaluationInputError Unknown evaluator_config key(s) ['tolrance'] for the datamint "
        "evaluator; accepted: ['labels', 'project', 'tolerance_mm', 'params', 'worst_cases']"
    )
    assert "needs the label names the model's masks are matched to" in refusals[1]
    assert "'tolerance_mm' must be a number of mm, 0 or more; got -1" in refusals[2]


def test_the_evaluation_package_exports_exactly_this():
    import datamint_core.evaluation as evaluation

    assert sorted(evaluation.__all__) == [
        "EvaluationInputError", "EvaluationReport", "MODEL_TYPE", "case_key",
        "evaluate_predictions", "evaluate_project", "labels_from_file", "parse_labels",
        "project_cases",
    ]
    assert evaluation.MODEL_TYPE == "datamint-segmentation"
    assert issubclass(evaluation.EvaluationInputError, ValueError)


def test_slice_masks_are_scored_on_their_slice_and_misfits_are_refused():
    from datamint_core import SegmentationAnnotation
    from datamint_core.evaluation._score import score_case

    truth = np.zeros((4, 6, 6), dtype=np.uint8)
    truth[2, 1:4, 1:4] = 1
    on_slice = SegmentationAnnotation("organ", truth[2] == 1, scope="slice", slice_index=2)

    metrics, unmatched = score_case([on_slice], truth, {1: "organ"}, spacing=(3.0, 1.0, 1.0),
                                    tolerance_mm=1.0)
    assert metrics["organ"]["dice"] == 1.0 and unmatched == []

    misfit = SegmentationAnnotation("organ", np.ones((5, 5), dtype=bool), scope="slice",
                                    slice_index=2)
    with pytest.raises(ValueError) as raised:
        score_case([misfit], truth, {1: "organ"}, spacing=None, tolerance_mm=1.0)
    assert str(raised.value) == (
        "The predicted mask 'organ' of shape (5, 5) does not fit the reference label map of "
        "shape (4, 6, 6); accepted: masks of the reference's shape, or slice masks with their "
        "slice_index."
    )
