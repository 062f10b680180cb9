"""``validate_model``: the report a user reads before registering or serving a model."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from datamint_core import (
    AnnotationSpec,
    AnnotationType,
    BaseDatamintModel,
    CategoryAnnotation,
    ImageResource,
    SegmentationAnnotation,
    TaskType,
    ValidationReport,
    VolumeResource,
    validate_model,
)

CHECK_NAMES = [
    "task type",
    "supported modes",
    "annotation specs",
    "predict",
    "output length",
    "identifiers",
    "annotation types",
]


class ThresholdSegmenter(BaseDatamintModel):
    """Marks pixels above 0.5 as ``bright``; remembers the shape of every image it saw."""

    task_type = TaskType.IMAGE_SEGMENTATION
    annotation_specs = [AnnotationSpec("bright", AnnotationType.SEGMENTATION)]

    def __init__(self) -> None:
        super().__init__()
        self.seen_shapes: list[tuple[int, ...]] = []

    def predict_image(self, model_input, **kwargs):
        self.seen_shapes.extend(r.shape for r in model_input)
        return [[SegmentationAnnotation("bright", r.pixels > 0.5)] for r in model_input]


class UndeclaredLabelSegmenter(ThresholdSegmenter):
    """Also returns ``dark``, which its specs do not declare."""

    def predict_image(self, model_input, **kwargs):
        return [
            [
                SegmentationAnnotation("bright", r.pixels > 0.5),
                SegmentationAnnotation("dark", r.pixels < 0.1),
            ]
            for r in model_input
        ]


class CategoryReturningSegmenter(BaseDatamintModel):
    """A segmentation model that returns a class instead of a mask."""

    task_type = TaskType.IMAGE_SEGMENTATION
    annotation_specs = [AnnotationSpec("verdict", AnnotationType.CATEGORY)]

    def predict_image(self, model_input, **kwargs):
        return [[CategoryAnnotation("verdict", "bright")] for _ in model_input]


class MistypedSegmenter(ThresholdSegmenter):
    """Returns ``bright`` as a category although its spec declares it a segmentation."""

    def predict_image(self, model_input, **kwargs):
        return [[CategoryAnnotation("bright", "yes")] for _ in model_input]


class CrashingModel(ThresholdSegmenter):
    def predict_image(self, model_input, **kwargs):
        raise RuntimeError("weights not loaded")


class OneResultTooManyModel(ThresholdSegmenter):
    def predict_image(self, model_input, **kwargs):
        return [[] for _ in range(len(model_input) + 1)]


class UntypedSegmenter(BaseDatamintModel):
    """Declares neither a task type nor annotation specs."""

    def predict_image(self, model_input, **kwargs):
        return [[SegmentationAnnotation("bright", r.pixels > 0.5)] for r in model_input]


class DuplicateSpecsSegmenter(ThresholdSegmenter):
    annotation_specs = [
        AnnotationSpec("bright", AnnotationType.SEGMENTATION),
        AnnotationSpec("liver", AnnotationType.SEGMENTATION),
        AnnotationSpec("bright", AnnotationType.SEGMENTATION, description="again"),
    ]


class SliceOnlySegmenter(BaseDatamintModel):
    """Implements only ``predict_slice``; ``volume`` is bridged from it."""

    task_type = "volume_segmentation"
    annotation_specs = [AnnotationSpec("bright", AnnotationType.SEGMENTATION)]

    def __init__(self) -> None:
        super().__init__()
        self.seen_volume_shapes: list[tuple[int, ...]] = []

    def predict_slice(self, model_input, slice_index, axis="axial", **kwargs):
        self.seen_volume_shapes.extend(r.shape for r in model_input)
        return [
            [SegmentationAnnotation("bright", r.get_slice(slice_index, axis).pixels > 0.5)]
            for r in model_input
        ]


class PlainThresholder:
    """Not a Datamint model: just an object with a ``predict_image`` method."""

    task_type = "image_segmentation"
    annotation_specs = [AnnotationSpec("bright", AnnotationType.SEGMENTATION)]

    def predict_image(self, model_input, **kwargs):
        return [[SegmentationAnnotation("bright", r.pixels > 0.5)] for r in model_input]


class NoHandlerModel(BaseDatamintModel):
    task_type = TaskType.IMAGE_SEGMENTATION


class MalignancyClassifier(BaseDatamintModel):
    """Returns a category value its spec does not allow."""

    task_type = TaskType.IMAGE_CLASSIFICATION
    annotation_specs = [AnnotationSpec.category("malignancy", ["benign", "malignant"])]

    def predict_image(self, model_input, **kwargs):
        return [[CategoryAnnotation("malignancy", "uncertain")] for _ in model_input]


def check(report: ValidationReport, name: str):
    (found,) = [c for c in report.checks if c.name == name]
    return found


def check_names(report: ValidationReport) -> list[str]:
    return [c.name for c in report.checks]


# -- a correct model -----------------------------------------------------------------------


def test_a_correct_threshold_segmenter_passes_every_check() -> None:
    report = validate_model(ThresholdSegmenter())

    assert report.ok
    assert check_names(report) == CHECK_NAMES
    assert [c.status for c in report.checks] == ["pass"] * len(CHECK_NAMES)
    assert check(report, "task type").message == "image_segmentation"
    assert check(report, "annotation specs").message == "bright"
    assert check(report, "output length").message == (
        "one list of annotations for each of the 1 input(s)"
    )
    assert check(report, "identifiers").message == "1 annotation(s) match the specs"
    assert check(report, "annotation types").message == "all of ['segmentation']"
    assert report.predict_seconds is not None and report.predict_seconds >= 0


def test_the_default_sample_is_one_64x64_image() -> None:
    model = ThresholdSegmenter()

    report = validate_model(model)

    assert model.seen_shapes == [(64, 64)]
    assert re.fullmatch(
        r"1 input\(s\) -> 1 annotation\(s\) in \d+\.\d{3} s", check(report, "predict").message
    )


def test_the_supported_modes_check_lists_bridged_modes_too() -> None:
    report = validate_model(ThresholdSegmenter())

    assert check(report, "supported modes").message == "image, frame, all_frames, slice, volume"


def test_a_given_sample_input_is_used_instead_of_the_synthetic_one() -> None:
    model = ThresholdSegmenter()
    samples = [ImageResource(np.ones((8, 9))), ImageResource(np.zeros((3, 4))).to_dict()]

    report = validate_model(model, samples)

    assert report.ok
    assert model.seen_shapes == [(8, 9), (3, 4)]
    assert check(report, "output length").message == (
        "one list of annotations for each of the 2 input(s)"
    )


def test_params_are_passed_to_the_smoke_prediction() -> None:
    volume = VolumeResource(np.random.default_rng(0).random((3, 10, 12)))
    model = ThresholdSegmenter()

    report = validate_model(
        model, volume, params={"mode": "slice", "slice_index": 1, "axis": "sagittal"}
    )

    assert report.ok
    assert model.seen_shapes == [(3, 10)]


def test_a_sample_input_that_cannot_be_parsed_fails_the_sample_input_check() -> None:
    report = validate_model(ThresholdSegmenter(), np.zeros((4, 4)))

    assert not report.ok
    assert check_names(report) == [
        "task type",
        "supported modes",
        "annotation specs",
        "sample input",
    ]
    assert check(report, "sample input").status == "fail"
    assert check(report, "sample input").message.startswith(
        "Got a bare numeric array of shape (4, 4); wrap it"
    )


def test_the_report_is_json_ready() -> None:
    report = validate_model(ThresholdSegmenter())

    data = json.loads(json.dumps(report.to_dict()))

    assert data["ok"] is True
    assert data["predict_seconds"] == report.predict_seconds
    assert [c["name"] for c in data["checks"]] == CHECK_NAMES
    assert data["checks"][0] == {
        "name": "task type",
        "status": "pass",
        "message": "image_segmentation",
    }


# -- what a failing model sees -------------------------------------------------------------


def test_an_identifier_missing_from_the_specs_fails_the_identifiers_check_naming_it() -> None:
    report = validate_model(UndeclaredLabelSegmenter())

    assert not report.ok
    identifiers = check(report, "identifiers")
    assert identifiers.status == "fail"
    assert identifiers.message == "'dark' is not declared (declared: bright (segmentation))"
    assert check(report, "annotation types").status == "pass"


def test_a_category_value_outside_the_spec_values_is_named_in_the_identifiers_check() -> None:
    report = validate_model(MalignancyClassifier())

    assert not report.ok
    identifiers = check(report, "identifiers")
    assert identifiers.status == "fail"
    assert identifiers.message == (
        "'malignancy' returned value 'uncertain', not one of ['benign', 'malignant'] "
        "(declared: malignancy (category))"
    )
    assert check(report, "annotation types").status == "pass"


def test_an_identifier_returned_as_another_type_fails_the_identifiers_check_naming_both() -> None:
    report = validate_model(MistypedSegmenter())

    assert not report.ok
    identifiers = check(report, "identifiers")
    assert identifiers.status == "fail"
    assert identifiers.message == (
        "'bright' is declared as 'segmentation' but returned as 'category' "
        "(declared: bright (segmentation))"
    )


def test_a_segmentation_model_returning_a_category_fails_the_annotation_types_check() -> None:
    report = validate_model(CategoryReturningSegmenter())

    assert not report.ok
    assert check(report, "identifiers").status == "pass"
    types = check(report, "annotation types")
    assert types.status == "fail"
    assert types.message == (
        "task type 'image_segmentation' expects ['segmentation']; the model returned ['category']"
    )


def test_a_handler_that_raises_fails_the_predict_check_with_the_exception_text() -> None:
    report = validate_model(CrashingModel())

    assert not report.ok
    predict = check(report, "predict")
    assert predict.status == "fail"
    assert predict.message == "RuntimeError: weights not loaded"
    assert check_names(report) == CHECK_NAMES[:4]
    assert report.predict_seconds is None


def test_a_handler_returning_the_wrong_number_of_results_fails_the_output_length_check() -> None:
    report = validate_model(OneResultTooManyModel())

    assert not report.ok
    assert check_names(report) == CHECK_NAMES[:5]
    predict = check(report, "predict")
    assert predict.status == "pass"
    assert predict.message == "the handler ran"
    length = check(report, "output length")
    assert length.status == "fail"
    assert length.message.startswith("The 'image' handler returned 2 entries for 1 input")
    assert length.message.endswith(
        "; it must return exactly one list of annotations per input (use [] for none)."
    )
    assert report.predict_seconds is None


def test_a_model_without_a_task_type_gets_a_warning_and_its_types_are_not_checked() -> None:
    report = validate_model(UntypedSegmenter())

    assert report.ok
    assert check(report, "task type").status == "warn"
    assert "no task_type" in check(report, "task type").message
    assert check(report, "annotation types").status == "skip"
    assert check(report, "annotation types").message == "no task_type to check against"


def test_a_model_without_annotation_specs_gets_a_warning_and_its_identifiers_are_skipped() -> None:
    report = validate_model(UntypedSegmenter())

    assert check(report, "annotation specs").status == "warn"
    assert check(report, "annotation specs").message == (
        "no annotation_specs: the platform cannot list what it returns"
    )
    assert check(report, "identifiers").status == "skip"


def test_duplicate_spec_identifiers_fail_the_annotation_specs_check() -> None:
    report = validate_model(DuplicateSpecsSegmenter())

    assert not report.ok
    specs = check(report, "annotation specs")
    assert specs.status == "fail"
    assert specs.message == "duplicate identifiers ['bright']"


def test_a_model_with_no_handlers_is_reported_not_raised() -> None:
    report = validate_model(NoHandlerModel())

    assert not report.ok
    assert check(report, "supported modes").status == "fail"
    assert check(report, "supported modes").message == "the model serves no prediction mode"
    assert check(report, "predict").message.startswith(
        "UnsupportedModeError: This model does not support prediction mode"
    )


# -- models that are not plain image models ------------------------------------------------


def test_a_volume_only_model_is_validated_on_a_synthetic_volume() -> None:
    model = SliceOnlySegmenter()

    report = validate_model(model)

    assert report.ok, str(report)
    assert check(report, "supported modes").message == "slice, volume"
    assert check(report, "task type").message == "volume_segmentation"
    assert model.seen_volume_shapes == [(8, 64, 64)] * 8
    # the eight slice masks are stacked into one volume mask
    assert check(report, "predict").message.startswith("1 input(s) -> 1 annotation(s)")


def test_an_object_with_predict_image_is_wrapped_and_validated() -> None:
    report = validate_model(PlainThresholder())

    assert report.ok
    assert check_names(report) == CHECK_NAMES
    assert check(report, "task type").message == "image_segmentation"
    assert check(report, "annotation specs").message == "bright"


# -- the printed report --------------------------------------------------------------------


def test_the_printed_report_lists_every_check_and_ends_with_ok() -> None:
    report = validate_model(ThresholdSegmenter())

    lines = str(report).splitlines()

    assert len(lines) == len(CHECK_NAMES) + 1
    for line, check_ in zip(lines, report.checks, strict=False):
        assert line.startswith(f"{check_.status.upper():5} {check_.name}")
        assert line.endswith(check_.message)
    assert lines[-1] == "OK"


def test_the_printed_report_of_a_failing_model_ends_with_failed() -> None:
    text = str(validate_model(CrashingModel()))

    assert "FAIL  predict" in text
    assert "RuntimeError: weights not loaded" in text
    assert text.splitlines()[-1] == "FAILED"


def test_warnings_and_skips_are_printed_but_still_end_with_ok() -> None:
    text = str(validate_model(UntypedSegmenter()))

    assert re.search(r"^WARN  task type\s+no task_type", text, re.MULTILINE)
    assert re.search(r"^SKIP  annotation types\s+no task_type to check against", text, re.MULTILINE)
    assert text.splitlines()[-1] == "OK"


@pytest.mark.parametrize(
    "model_class",
    [
        UndeclaredLabelSegmenter,
        CategoryReturningSegmenter,
        DuplicateSpecsSegmenter,
        MalignancyClassifier,
        MistypedSegmenter,
        OneResultTooManyModel,
    ],
)
def test_every_failing_report_prints_failed(model_class: type) -> None:
    assert str(validate_model(model_class())).splitlines()[-1] == "FAILED"
