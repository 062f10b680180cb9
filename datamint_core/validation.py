"""``validate_model``: check a model before it is registered or served."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from datamint_core.annotations import Annotation, AnnotationSpec, AnnotationType
from datamint_core.enums import PredictionMode, TaskType
from datamint_core.errors import ResultShapeError
from datamint_core.model import BaseDatamintModel, as_datamint_model
from datamint_core.resources import BaseResource, ImageResource, VolumeResource
from datamint_core.wire import as_resources

Status = Literal["pass", "warn", "fail", "skip"]

_A = AnnotationType
#: The annotation types a model of each task is expected to return.
TASK_ANNOTATION_TYPES: dict[TaskType, frozenset[AnnotationType]] = {
    TaskType.IMAGE_SEGMENTATION: frozenset({_A.SEGMENTATION}),
    TaskType.VOLUME_SEGMENTATION: frozenset({_A.SEGMENTATION}),
    TaskType.VIDEO_SEGMENTATION: frozenset({_A.SEGMENTATION}),
    TaskType.INSTANCE_SEGMENTATION: frozenset({_A.SEGMENTATION, _A.SQUARE}),
    TaskType.IMAGE_CLASSIFICATION: frozenset({_A.CATEGORY, _A.LABEL}),
    TaskType.MULTILABEL_IMAGE_CLASSIFICATION: frozenset({_A.CATEGORY, _A.LABEL}),
    TaskType.VOLUME_CLASSIFICATION: frozenset({_A.CATEGORY, _A.LABEL}),
    TaskType.VIDEO_FRAME_CLASSIFICATION: frozenset({_A.CATEGORY, _A.LABEL}),
    TaskType.OBJECT_DETECTION: frozenset({_A.SQUARE, _A.CIRCLE, _A.REGION}),
    TaskType.LANDMARK_DETECTION: frozenset({_A.POINT, _A.LINE}),
    TaskType.REPORT_GENERATION: frozenset({_A.TEXT}),
    TaskType.ANOMALY_DETECTION: frozenset(
        {_A.CATEGORY, _A.LABEL, _A.NUMERIC, _A.SEGMENTATION, _A.SQUARE}
    ),
}


@dataclasses.dataclass(frozen=True)
class Check:
    """One line of a :class:`ValidationReport`."""

    name: str
    status: Status
    message: str


@dataclasses.dataclass
class ValidationReport:
    """What :func:`validate_model` found; ``ok`` is False when any check failed."""

    checks: list[Check]
    predict_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return all(check.status != "fail" for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "predict_seconds": self.predict_seconds,
            "checks": [dataclasses.asdict(check) for check in self.checks],
        }

    def __str__(self) -> str:
        width = max(len(check.name) for check in self.checks)
        lines = [
            f"{check.status.upper():5} {check.name:<{width}}  {check.message}"
            for check in self.checks
        ]
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def validate_model(
    model: Any, sample_input: Any = None, params: dict[str, Any] | None = None
) -> ValidationReport:
    """Check a model's metadata and run one prediction on a sample.

    Args:
        model: a Datamint model, an object with ``predict_*`` methods, or a model URI
            (loaded with :func:`datamint_core.load_model`).
        sample_input: what to predict on; by default a small synthetic input of a kind the
            model serves (a 64x64 image, or an 8x64x64 volume for volume-only models).
        params: params for the smoke prediction (``mode`` and the mode's params).

    Returns:
        A report: metadata checks, the smoke prediction, the output length, annotation
        identifiers against ``annotation_specs`` and annotation types against ``task_type``.
    """
    if isinstance(model, str):
        from datamint_core.flavor import load_model

        model = load_model(model)
    model = as_datamint_model(model)
    model._prepare_for_inference()  # validate what a loaded model serves (torch: eval mode)
    checks = _metadata_checks(model)
    try:
        resources = as_resources(sample_input) if sample_input is not None else _sample(model)
    except ValueError as error:
        checks.append(Check("sample input", "fail", str(error)))
        return ValidationReport(checks)

    started = time.perf_counter()
    try:
        result = model.predict(resources, params)
    except ResultShapeError as error:
        checks.append(Check("predict", "pass", "the handler ran"))
        checks.append(Check("output length", "fail", str(error)))
        return ValidationReport(checks)
    except Exception as error:  # the report is the point: say what broke, don't raise
        checks.append(Check("predict", "fail", f"{type(error).__name__}: {error}"))
        return ValidationReport(checks)
    elapsed = time.perf_counter() - started
    count = sum(len(entry) for entry in result)
    checks.append(
        Check(
            "predict",
            "pass",
            f"{len(resources)} input(s) -> {count} annotation(s) in {elapsed:.3f} s",
        )
    )
    checks.append(
        Check(
            "output length",
            "pass",
            f"one list of annotations for each of the {len(resources)} input(s)",
        )
    )
    annotations = [annotation for entry in result for annotation in entry]
    checks.append(_identifier_check(annotations, model.annotation_specs))
    checks.append(_type_check(annotations, model.task_type))
    return ValidationReport(checks, predict_seconds=elapsed)


def _metadata_checks(model: BaseDatamintModel) -> list[Check]:
    checks = []
    task = model.task_type
    if task is None:
        checks.append(
            Check("task type", "warn", "no task_type: set it on the class or pass it to save_model")
        )
    else:
        checks.append(Check("task type", "pass", TaskType.parse(task).value))
    modes = model.get_supported_modes()
    checks.append(
        Check(
            "supported modes",
            "pass" if modes else "fail",
            ", ".join(modes) if modes else "the model serves no prediction mode",
        )
    )
    specs = model.annotation_specs
    if specs is None:
        checks.append(
            Check(
                "annotation specs",
                "warn",
                "no annotation_specs: the platform cannot list what it returns",
            )
        )
    else:
        identifiers = [spec.identifier for spec in specs]
        duplicates = sorted({i for i in identifiers if identifiers.count(i) > 1})
        checks.append(
            Check(
                "annotation specs",
                "fail" if duplicates else "pass",
                f"duplicate identifiers {duplicates}" if duplicates else ", ".join(identifiers),
            )
        )
    return checks


def _identifier_check(
    annotations: list[Annotation], specs: Sequence[AnnotationSpec] | None
) -> Check:
    if specs is None:
        return Check("identifiers", "skip", "no annotation_specs to check against")
    declared = {spec.identifier: spec for spec in specs}
    problems = set()
    for annotation in annotations:
        spec = declared.get(annotation.identifier)
        if spec is None:
            problems.add(f"{annotation.identifier!r} is not declared")
        elif spec.type is not annotation.type:
            problems.add(
                f"{annotation.identifier!r} is declared as {spec.type.value!r} "
                f"but returned as {annotation.type.value!r}"
            )
        elif not spec.matches(annotation):
            problems.add(
                f"{annotation.identifier!r} returned value {getattr(annotation, 'value', None)!r}, "
                f"not one of {list(spec.values or ())}"
            )
    if problems:
        listed = ", ".join(f"{s.identifier} ({s.type.value})" for s in specs)
        return Check("identifiers", "fail", "; ".join(sorted(problems)) + f" (declared: {listed})")
    return Check("identifiers", "pass", f"{len(annotations)} annotation(s) match the specs")


def _type_check(annotations: list[Annotation], task: TaskType | None) -> Check:
    if task is None:
        return Check("annotation types", "skip", "no task_type to check against")
    expected = TASK_ANNOTATION_TYPES[TaskType.parse(task)]
    wrong = sorted({a.type.value for a in annotations if a.type not in expected})
    if wrong:
        return Check(
            "annotation types",
            "fail",
            f"task type {task.value!r} expects {sorted(t.value for t in expected)}; "
            f"the model returned {wrong}",
        )
    return Check("annotation types", "pass", f"all of {sorted(t.value for t in expected)}")


def _sample(model: BaseDatamintModel) -> list[BaseResource]:
    rng = np.random.default_rng(0)
    modes = model.get_supported_modes()
    image_modes = {PredictionMode.IMAGE.value, PredictionMode.DEFAULT.value}
    if image_modes.isdisjoint(modes) and PredictionMode.VOLUME.value in modes:
        return [VolumeResource(rng.random((8, 64, 64), dtype=np.float32), id="sample-volume")]
    return [ImageResource(rng.random((64, 64), dtype=np.float32), id="sample-image")]
