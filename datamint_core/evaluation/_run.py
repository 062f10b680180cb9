"""Evaluate a ``datamint batch`` output against its labels, or a model on a project.

Output directory::

    OUTPUT/
        metrics.csv        one row per case (see datamint_core.evaluation._score)
        summary.json       cases, failures, labels, tolerance and the summary metrics
        predictions/       (evaluate_project only) the datamint batch output it scored

Cases are scored in a process pool, one case at a time per worker (its two label maps
and nothing else in memory), results streamed back as they finish.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from datamint_core.errors import EvaluationInputError
from datamint_core.evaluation._cases import case_key, project_cases, reference_rows
from datamint_core.evaluation._score import (
    columns,
    failed_row,
    ok_row,
    score_case,
    summary,
    write_summary,
    write_table,
)

METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
PREDICTIONS_DIR = "predictions"


@dataclass(frozen=True)
class EvaluationReport:
    """What an evaluation did.

    Attributes:
        output: the output directory (``metrics.csv``, ``summary.json``).
        cases: labelled cases evaluated.
        scored: cases with metrics.
        failed: cases that could not be scored (no prediction, a failed prediction, an
            unreadable label map); their errors are in ``metrics.csv``.
        metrics: the summary metrics (``{"dice": …, "dice/liver": …}``).
        seconds: wall time.
    """

    output: str
    cases: int
    scored: int
    failed: int
    metrics: dict[str, float] = field(repr=False)
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether every case was scored."""
        return self.failed == 0

    def __str__(self) -> str:
        headline = ", ".join(
            f"{name} {self.metrics[name]:.4g}" for name in ("dice", "hd95", "assd", "nsd")
            if name in self.metrics
        )
        return (f"{self.cases} cases: {self.scored} scored, {self.failed} failed; "
                f"{headline}; {self.seconds:.1f} s; results in {self.output}")


def evaluate_predictions(
    predictions: str | os.PathLike[str],
    references: str | os.PathLike[str],
    output: str | os.PathLike[str],
    labels: Mapping[int, str],
    *,
    tolerance_mm: float = 1.0,
    workers: int | None = None,
) -> EvaluationReport:
    """Score a ``datamint batch`` output against reference label maps.

    Args:
        predictions: the batch job's output directory.
        references: the label maps: a directory (one file per case, named as the images
            were, or without nnU-Net's ``_0000``) or a manifest (``id``, ``path``, and
            optionally ``spacing``) as ``datamint batch`` takes.
        output: where ``metrics.csv`` and ``summary.json`` go.
        labels: ``{value: name}``: the reference's label values and the names the model
            gives its masks.
        tolerance_mm: the normalized surface Dice's tolerance.
        workers: processes scoring cases (default: the CPU count; 1 scores in this process).

    Raises:
        EvaluationInputError: the predictions or labels cannot be listed, or no labelled
            case has a prediction row.
        ImportError: pyarrow (``datamint[batch]``) or scipy (``datamint[metrics]``) missing.
    """
    started = time.monotonic()
    references_by_case = {key: {"row": row} for key, row in reference_rows(references).items()}
    tasks = _tasks(predictions, references_by_case, f"the labels {os.fspath(references)!r}")
    return _evaluate(tasks, output, labels, tolerance_mm, workers, started)


def _tasks(
    predictions: str | os.PathLike[str], references: Mapping[str, Any], what: str
) -> list[dict[str, Any]]:
    """One scoring task per labelled case: its reference and its batch output row."""
    from datamint_core.batch import read_results

    if not Path(predictions).is_dir():
        raise EvaluationInputError(
            f"No batch output at {os.fspath(predictions)!r}; give the OUTPUT directory of a "
            "`datamint batch` run."
        )
    results = read_results(predictions)
    predicted = {case_key(row.id): row for row in results.itertuples(index=False)}
    if not any(key in predicted for key in references):
        raise EvaluationInputError(
            f"No case of {what} has a prediction in {os.fspath(predictions)!r} (cases are "
            f"matched by file name without extension and _0000: e.g. "
            f"{next(iter(references), 'none')!r} vs {next(iter(predicted), 'none')!r})."
        )
    tasks = []
    for key, reference in references.items():
        row = predicted.get(key)
        tasks.append({
            "id": key,
            "reference": reference,
            "status": None if row is None else row.status,
            "error": None if row is None else row.error,
            "annotations": None if row is None else row.annotations,
            "predictions": os.fspath(predictions),
        })
    return tasks


def evaluate_project(
    model_uri: str,
    project: str | os.PathLike[str],
    output: str | os.PathLike[str],
    params: dict[str, Any] | None = None,
    *,
    tolerance_mm: float = 1.0,
    engine: Literal["local", "spark"] = "local",
    workers: int | None = None,
    spark: Any = None,
    progress: bool = False,
) -> EvaluationReport:
    """Predict on a project's labelled images with ``datamint batch``, then score them.

    The predictions go to ``OUTPUT/predictions`` (a rerun resumes them, as ``datamint
    batch`` does); the labels and their names come from the project's ``dataset.json``.
    ``engine``, ``workers`` and ``spark`` (a session to use) are :func:`run_batch`'s; the
    scoring runs in a local process pool of ``workers``.

    Raises:
        EvaluationInputError: no project there, or its ``dataset.json`` cannot be used.
    """
    from datamint_core.batch import run_batch

    started = time.monotonic()
    cases, _ = project_cases(project)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "_cases.jsonl"
    manifest.write_text("".join(json.dumps(_manifest_row(case)) + "\n" for case in cases),
                        encoding="utf-8")
    run_batch(model_uri, manifest, out / PREDICTIONS_DIR, params, engine=engine,
              workers=workers, spark=spark, progress=progress)
    # References read as training reads them (NIfTI or DICOM SEG, the label values
    # renumbered 1..n in the order of the project's label names).
    names = _project_label_names(cases[0]["project"])
    references = {case["id"]: {"project": case["project"], "case": case["id"]}
                  for case in cases}
    tasks = _tasks(out / PREDICTIONS_DIR, references, f"the project {os.fspath(project)!r}")
    return _evaluate(tasks, out, dict(enumerate(names, start=1)), tolerance_mm, workers,
                     started)


def _manifest_row(case: Mapping[str, Any]) -> dict[str, Any]:
    """A ``datamint batch`` manifest row: ``path``, or one ``path:<channel>`` per channel."""
    if len(case["images"]) == 1:
        return {"id": case["id"], "path": case["images"][0]}
    return {"id": case["id"], **{f"path:{channel}": path for channel, path
                                  in zip(case["channels"], case["images"], strict=True)}}


@functools.lru_cache(maxsize=4)
def _project(root: str) -> Any:
    from datamint_core.training import ImageDataset

    return ImageDataset(root, source="local")


def _project_label_names(root: str) -> tuple[str, ...]:
    return tuple(_project(root).label_names)


def _evaluate(
    tasks: list[dict[str, Any]],
    output: str | os.PathLike[str],
    labels: Mapping[int, str],
    tolerance_mm: float,
    workers: int | None,
    started: float,
) -> EvaluationReport:
    rows = sorted(_score_all(tasks, dict(labels), tolerance_mm, workers), key=lambda r: r["id"])
    out = Path(output)
    write_table(out / METRICS_FILE, rows, columns(labels))
    content = summary(rows, labels, tolerance_mm)
    write_summary(out / SUMMARY_FILE, content)
    return EvaluationReport(
        output=os.fspath(out),
        cases=content["cases"],
        scored=content["scored"],
        failed=content["failed"],
        metrics=content["metrics"],
        seconds=time.monotonic() - started,
    )


def _score_all(
    tasks: list[dict[str, Any]], labels: dict[int, str], tolerance_mm: float, workers: int | None
) -> Iterator[dict[str, Any]]:
    count = min(workers or os.cpu_count() or 1, max(len(tasks), 1))
    if count == 1:
        for task in tasks:
            yield _score_task(task, labels, tolerance_mm)
        return
    # At most two cases in flight per worker: memory follows the workers, not the cohort.
    # spawn, as the batch engine: a fork of a process holding threads (torch, MLflow) may hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
        pending: set[Future[dict[str, Any]]] = set()
        for task in tasks:
            if len(pending) >= 2 * count:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
            pending.add(pool.submit(_score_task, task, labels, tolerance_mm))
        for future in pending:
            yield future.result()


def _score_task(
    task: Mapping[str, Any], labels: dict[int, str], tolerance_mm: float
) -> dict[str, Any]:
    """Score one case; any failure becomes a ``failed`` row with its error, never raises."""
    from datamint_core.batch._rows import read_annotations

    case_id = task["id"]
    if task["status"] is None:
        return failed_row(case_id, "no prediction: the batch output has no row for this case")
    if task["status"] != "ok":
        return failed_row(case_id, f"the prediction failed: {task['error']}")
    try:
        annotations = read_annotations(task["annotations"], task["predictions"])
        truth, spacing = _reference(task["reference"])
        metrics, unmatched = score_case(annotations, truth, labels, spacing=spacing,
                                        tolerance_mm=tolerance_mm)
    except Exception as error:  # a case's failure is recorded, and the evaluation goes on
        return failed_row(case_id, error)
    return ok_row(case_id, metrics, spacing=spacing, unmatched=unmatched)


def _reference(reference: Mapping[str, Any]) -> tuple[Any, Any]:
    """A case's reference label map and its spacing (mm along its axes, or None)."""
    if "row" in reference:
        from datamint_core.batch._inputs import load_resource

        resource = load_resource(reference["row"])
        return resource.pixels, getattr(resource, "spacing", None)
    case = _project(reference["project"]).load(reference["case"])
    return case.label, case.spacing
