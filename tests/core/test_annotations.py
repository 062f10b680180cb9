"""Annotations: what a model returns, as the Datamint platform reads it."""

import json
import time

import numpy as np
import pytest

from datamint_core import annotations
from datamint_core.annotations import (
    Annotation,
    AnnotationScope,
    AnnotationSpec,
    AnnotationType,
    BoxAnnotation,
    CategoryAnnotation,
    LineAnnotation,
    NumericAnnotation,
    PointAnnotation,
    SegmentationAnnotation,
    TextAnnotation,
    decode_mask_rle,
    encode_mask_rle,
)


def _through_json(annotation: Annotation) -> Annotation:
    return Annotation.from_dict(json.loads(json.dumps(annotation.to_dict())))


def _builtin_types_in(value: object) -> set[type]:
    if isinstance(value, dict):
        return {dict}.union(*(_builtin_types_in(item) for item in value.values()))
    if isinstance(value, list):
        return {list}.union(*(_builtin_types_in(item) for item in value))
    return {type(value)}


def _ball(shape: tuple[int, int, int], radius: float) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    center = [size / 2 for size in shape]
    return (z - center[0]) ** 2 + (y - center[1]) ** 2 + (x - center[2]) ** 2 < radius**2


EXAMPLES = [
    CategoryAnnotation("malignancy", "benign", confidence=0.75),
    CategoryAnnotation("phase", "arterial", scope="volume"),
    SegmentationAnnotation(
        "liver",
        np.eye(5, 7, dtype=bool),
        scope="slice",
        slice_index=42,
        slice_axis="axial",
        confidence=1.0,
    ),
    SegmentationAnnotation(
        "tumour",
        _ball((9, 11, 13), 4),
        scope="volume",
        spacing=(2.5, 0.7, 0.7),
        affine=np.diag([0.7, 0.7, 2.5, 1.0]),
    ),
    BoxAnnotation("nodule", 10, 20.5, 30, 40.25, frame_index=3, scope="frame"),
    PointAnnotation("landmark", 1.5, 2.5),
    PointAnnotation("apex", 1.0, 2.0, 17.0, scope="volume", confidence=0.0),
    LineAnnotation("diameter", [(0, 0), (3.5, 4.5), (10, 1)], slice_index=0, slice_axis="coronal"),
    NumericAnnotation("volume", 512.25, unit="mL"),
    NumericAnnotation("score", -3),
    TextAnnotation("finding", "Small hypodense lesion in segment VII."),
]


@pytest.mark.parametrize("annotation", EXAMPLES, ids=repr)
def test_every_annotation_kind_round_trips_exactly_through_json(annotation: Annotation) -> None:
    assert _through_json(annotation) == annotation


@pytest.mark.parametrize("annotation", EXAMPLES, ids=repr)
def test_to_dict_holds_only_builtin_types(annotation: Annotation) -> None:
    assert _builtin_types_in(annotation.to_dict()) <= {dict, list, str, int, float}


def test_to_dict_names_the_type_by_its_string_and_leaves_out_fields_that_are_none() -> None:
    assert CategoryAnnotation("malignancy", "benign").to_dict() == {
        "type": "category",
        "identifier": "malignancy",
        "scope": "image",
        "value": "benign",
    }


def test_numpy_scalars_are_stored_as_python_numbers() -> None:
    point = PointAnnotation(
        "p", np.float32(1.5), np.int64(2), confidence=np.float64(0.5), slice_index=np.int32(7)
    )

    data = point.to_dict()

    assert data["x"] == 1.5 and type(data["x"]) is float
    assert type(data["y"]) is float and type(data["confidence"]) is float
    assert data["slice_index"] == 7 and type(data["slice_index"]) is int


@pytest.mark.parametrize(
    "mask",
    [
        np.ones((1, 1), dtype=bool),
        np.zeros((1, 1), dtype=bool),
        np.zeros((4, 6), dtype=bool),
        np.ones((3, 5), dtype=bool),
        np.array([[True, False, True], [True, True, False]]),
        np.arange(35).reshape(5, 7).T % 3 == 0,  # not C-contiguous
    ],
    ids=["1x1 true", "1x1 false", "all false", "all true", "checker", "transposed"],
)
def test_masks_of_odd_shapes_round_trip(mask: np.ndarray) -> None:
    annotation = SegmentationAnnotation("organ", mask)

    restored = _through_json(annotation)

    assert restored == annotation
    assert restored.mask.shape == mask.shape
    np.testing.assert_array_equal(restored.mask, mask)


def test_volume_mask_round_trips_through_json_with_spacing_and_affine() -> None:
    affine = np.array([[0.0, 0, -0.8, 120], [0, 0.8, 0, -90], [2.5, 0, 0, 33.3], [0, 0, 0, 1]])
    mask = _ball((12, 20, 16), 5)
    annotation = SegmentationAnnotation(
        "spleen", mask, scope="volume", spacing=[2.5, 0.8, 0.8], affine=affine, confidence=0.9
    )

    restored = _through_json(annotation)

    assert restored == annotation
    assert restored.spacing == (2.5, 0.8, 0.8)
    np.testing.assert_array_equal(restored.affine, affine)
    assert restored.voxel_count == int(mask.sum())


def test_mask_json_holds_alternating_run_lengths_starting_with_false() -> None:
    mask = np.array([[False, True, True], [False, False, True]])

    assert encode_mask_rle(mask) == {"shape": [2, 3], "rle": [1, 2, 2, 1], "order": "C"}
    assert encode_mask_rle(~mask)["rle"] == [0, 1, 2, 2, 1]
    assert SegmentationAnnotation("organ", mask).to_dict()["mask"] == encode_mask_rle(mask)


def test_random_300x512x512_mask_round_trips_through_rle() -> None:
    mask = np.random.default_rng(0).integers(0, 2, (300, 512, 512), dtype=np.uint8).view(bool)
    annotation = SegmentationAnnotation("noise", mask, scope="volume")

    restored = Annotation.from_dict(annotation.to_dict())

    assert restored == annotation


def test_blobby_volume_mask_json_is_far_smaller_than_nested_lists_and_fast_to_encode() -> None:
    sphere = _ball((300, 512, 512), 100)

    started = time.perf_counter()
    encoded = encode_mask_rle(sphere)
    encode_seconds = time.perf_counter() - started
    rle_json = json.dumps(encoded)

    # As nested lists every voxel costs at least 5 characters ("true," or "false,").
    assert len(rle_json) * 100 < 5 * sphere.size
    assert encode_seconds < 1.0
    np.testing.assert_array_equal(decode_mask_rle(json.loads(rle_json)), sphere)


def test_bool_mask_is_kept_without_a_copy_and_other_dtypes_become_bool() -> None:
    bool_mask = np.zeros((4, 4), dtype=bool)
    labels = np.array([[0, 2], [1, 0]], dtype=np.uint8)

    assert SegmentationAnnotation("organ", bool_mask).mask is bool_mask
    converted = SegmentationAnnotation("organ", labels).mask
    assert converted.dtype == bool
    assert converted.tolist() == [[False, True], [True, False]]


def test_with_fields_shares_the_mask_memory() -> None:
    annotation = SegmentationAnnotation("liver", np.ones((64, 64), dtype=bool))

    stamped = annotation.with_fields(scope="slice", slice_index=12, slice_axis="axial")

    assert np.shares_memory(stamped.mask, annotation.mask)
    assert (stamped.scope, stamped.slice_index, stamped.slice_axis) == ("slice", 12, "axial")
    assert annotation.scope is AnnotationScope.IMAGE and annotation.slice_index is None


def test_with_fields_validates_new_values_and_refuses_fields_other_than_the_common_ones() -> None:
    box = BoxAnnotation("nodule", 0, 0, 1, 1)

    with pytest.raises(ValueError, match=r"slice_index must be a non-negative integer; got -1"):
        box.with_fields(slice_index=-1)
    with pytest.raises(
        ValueError,
        match=r"with_fields cannot change 'x_min'; accepted fields: "
        r"'identifier', 'scope', 'confidence'",
    ):
        box.with_fields(x_min=0.5)


def test_annotations_are_equal_only_when_every_field_and_voxel_matches() -> None:
    mask = np.zeros((3, 3), dtype=bool)
    other_mask = mask.copy()
    other_mask[1, 1] = True

    assert SegmentationAnnotation("a", mask) == SegmentationAnnotation("a", mask.copy())
    assert SegmentationAnnotation("a", mask) != SegmentationAnnotation("a", other_mask)
    assert SegmentationAnnotation("a", mask) != SegmentationAnnotation("a", mask, spacing=(1, 1))
    assert SegmentationAnnotation("a", mask) != SegmentationAnnotation("a", mask.T[:2])
    assert CategoryAnnotation("a", "x") != TextAnnotation("a", "x")
    assert NumericAnnotation("a", 1.0) != NumericAnnotation("a", 1.0, confidence=0.5)


def test_repr_shows_mask_shape_and_voxel_count_instead_of_the_voxels() -> None:
    mask = np.zeros((40, 50, 60), dtype=bool)
    mask[:2, :3, :4] = True
    annotation = SegmentationAnnotation("liver", mask, scope="volume", affine=np.eye(4))

    text = repr(annotation)

    assert text == (
        "SegmentationAnnotation(identifier='liver', scope='volume', "
        "mask=<mask (40, 50, 60), 24 voxels>, affine=<float64 array (4, 4)>)"
    )
    assert annotation.voxel_count == 24


@pytest.mark.parametrize("confidence", [1.5, -0.01])
def test_confidence_outside_zero_to_one_is_refused(confidence: float) -> None:
    with pytest.raises(ValueError, match=rf"confidence must be within \[0, 1\]; got {confidence}"):
        CategoryAnnotation("malignancy", "benign", confidence=confidence)


def test_from_dict_refuses_an_unknown_type_and_lists_the_supported_ones() -> None:
    with pytest.raises(
        ValueError,
        match=r"annotation type 'ellipse' is not supported; "
        r"supported types: 'category', 'segmentation', 'square'",
    ):
        Annotation.from_dict({"type": "ellipse", "identifier": "x"})


def test_from_dict_names_a_missing_type_or_required_key() -> None:
    with pytest.raises(ValueError, match=r"an annotation must be a dict with a 'type' key"):
        Annotation.from_dict({"identifier": "x"})
    with pytest.raises(
        ValueError,
        match=r"a 'square' annotation is missing required key\(s\) "
        r"'x_max', 'y_max'",
    ):
        Annotation.from_dict({"type": "square", "identifier": "box", "x_min": 0, "y_min": 0})


def test_from_dict_refuses_unknown_keys_and_lists_the_accepted_ones() -> None:
    data = TextAnnotation("finding", "clear").to_dict() | {"colour": "red"}

    with pytest.raises(
        ValueError,
        match=r"a 'text' annotation has unknown key\(s\) 'colour'; "
        r"accepted keys: 'identifier', 'text', 'type'",
    ):
        Annotation.from_dict(data)


def test_from_dict_on_a_subclass_refuses_another_type() -> None:
    data = CategoryAnnotation("malignancy", "benign").to_dict()

    with pytest.raises(
        ValueError,
        match=r"SegmentationAnnotation.from_dict reads type "
        r"'segmentation'; got 'category'",
    ):
        SegmentationAnnotation.from_dict(data)
    assert CategoryAnnotation.from_dict(data) == CategoryAnnotation("malignancy", "benign")


def test_rle_whose_counts_do_not_sum_to_the_shape_is_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"run lengths sum to 3, but its shape \[2, 2\] "
        r"holds 4 voxels",
    ):
        decode_mask_rle({"shape": [2, 2], "rle": [1, 2], "order": "C"})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"shape": [2, 2], "rle": [5, -1]}, r"run lengths must be non-negative; got -1"),
        ({"shape": [2, 2], "rle": [1.5, 2.5]}, r"rle must be a flat list of integers"),
        ({"shape": [2, 2], "rle": [4], "order": "F"}, r"order must be 'C'; got 'F'"),
        ({"shape": [2, -2], "rle": []}, r"must be a non-negative integer; got -2"),
        ({"shape": [4], "rle": [4], "size": 4}, r"unknown key\(s\) 'size'"),
        ({"rle": [4]}, r"an RLE mask is missing required key\(s\) 'shape'"),
    ],
)
def test_malformed_rle_is_refused_with_what_was_wrong(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_mask_rle(data)


def test_box_with_min_greater_than_max_is_refused() -> None:
    with pytest.raises(ValueError, match=r"x_min \(5.0\) must be <= x_max \(2.0\)"):
        BoxAnnotation("nodule", 5, 0, 2, 1)
    with pytest.raises(ValueError, match=r"y_min \(3.0\) must be <= y_max \(1.0\)"):
        BoxAnnotation("nodule", 0, 3, 2, 1)


def test_mask_with_four_dimensions_is_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"must be 2-D \(H, W\) for scope 'image', 'frame' or "
        r"'slice', or 3-D \(D, H, W\) for scope 'volume'; "
        r"got a 4-D mask of shape \(1, 2, 3, 4\)",
    ):
        SegmentationAnnotation("organ", np.zeros((1, 2, 3, 4), dtype=bool), scope="volume")


def test_volume_mask_needs_volume_scope() -> None:
    with pytest.raises(ValueError, match=r"got a 3-D mask of shape \(2, 3, 4\) with scope 'image'"):
        SegmentationAnnotation("organ", np.zeros((2, 3, 4), dtype=bool))


def test_spacing_and_affine_must_fit_the_mask() -> None:
    mask = np.zeros((2, 3, 4), dtype=bool)

    with pytest.raises(ValueError, match=r"spacing must hold one value per mask axis \(3\)"):
        SegmentationAnnotation("organ", mask, scope="volume", spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"spacing values must be positive; got \(1.0, 0.0, 1.0\)"):
        SegmentationAnnotation("organ", mask, scope="volume", spacing=(1.0, 0.0, 1.0))
    with pytest.raises(
        ValueError,
        match=r"affine must be a 4x4 matrix of finite numbers; "
        r"got shape \(3, 3\)",
    ):
        SegmentationAnnotation("organ", mask, scope="volume", affine=np.eye(3))


@pytest.mark.parametrize("identifier", ["", "   ", None])
def test_empty_identifier_is_refused(identifier: object) -> None:
    with pytest.raises(ValueError, match=r"identifier must be a non-empty string; got"):
        PointAnnotation(identifier, 1, 2)


def test_unknown_slice_axis_is_refused_with_the_accepted_axes() -> None:
    with pytest.raises(
        ValueError,
        match=r"slice_axis must be one of 'axial', 'sagittal', "
        r"'coronal'; got 'transverse'",
    ):
        PointAnnotation("apex", 1, 2, slice_axis="transverse")


def test_unknown_scope_is_refused_with_the_accepted_scopes() -> None:
    with pytest.raises(
        ValueError,
        match=r"scope must be one of 'image', 'frame', 'slice', "
        r"'volume'; got 'series'",
    ):
        TextAnnotation("finding", "clear", scope="series")


def test_coordinates_must_be_finite_numbers() -> None:
    with pytest.raises(ValueError, match=r"value must be a finite number; got nan"):
        NumericAnnotation("volume", float("nan"))
    with pytest.raises(ValueError, match=r"x must be a finite number; got '1'"):
        PointAnnotation("apex", "1", 2)


def test_line_needs_at_least_two_xy_pairs() -> None:
    with pytest.raises(ValueError, match=r"a line needs at least 2 points; got 1"):
        LineAnnotation("diameter", [(0, 0)])
    with pytest.raises(
        ValueError,
        match=r"each of the points must be an \(x, y\) pair; "
        r"got \(1, 2, 3\)",
    ):
        LineAnnotation("diameter", [(0, 0), (1, 2, 3)])


def test_line_points_are_stored_as_tuples_of_floats() -> None:
    line = LineAnnotation("diameter", np.array([[0, 1], [2, 3]]))

    assert line.points == ((0.0, 1.0), (2.0, 3.0))
    assert type(line.points[0][0]) is float


def test_the_base_class_cannot_be_built_directly() -> None:
    with pytest.raises(
        TypeError,
        match=r"Annotation is a base class; build one of "
        r"'CategoryAnnotation'",
    ):
        Annotation("liver")


def test_category_spec_round_trips_through_json() -> None:
    spec = AnnotationSpec.category("malignancy", ["benign", "malignant"], "Biopsy outcome")

    data = json.loads(json.dumps(spec.to_dict()))

    assert data == {
        "identifier": "malignancy",
        "type": "category",
        "description": "Biopsy outcome",
        "values": ["benign", "malignant"],
    }
    assert AnnotationSpec.from_dict(data) == spec


def test_spec_accepts_the_type_as_a_string_and_leaves_out_unset_fields() -> None:
    spec = AnnotationSpec("liver", "segmentation")

    assert spec.type is AnnotationType.SEGMENTATION
    assert spec.to_dict() == {"identifier": "liver", "type": "segmentation"}
    assert AnnotationSpec.from_dict(spec.to_dict()) == spec


def test_spec_matches_annotations_with_its_identifier_type_and_allowed_values() -> None:
    spec = AnnotationSpec.category("malignancy", ["benign", "malignant"])

    assert spec.matches(CategoryAnnotation("malignancy", "benign"))
    assert not spec.matches(CategoryAnnotation("malignancy", "unsure"))
    assert not spec.matches(CategoryAnnotation("phase", "benign"))
    assert not spec.matches(TextAnnotation("malignancy", "benign"))
    assert AnnotationSpec("malignancy", "category").matches(CategoryAnnotation("malignancy", "x"))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: AnnotationSpec.category("m", []), r"values must be a non-empty list of unique"),
        (lambda: AnnotationSpec.category("m", ["a", "a"]), r"non-empty list of unique strings"),
        (lambda: AnnotationSpec.category("m", "ab"), r"unique strings; got 'ab'"),
        (lambda: AnnotationSpec("m", "text", values=("a",)), r"only accepted for 'category'"),
        (lambda: AnnotationSpec("m", "mask"), r"type must be one of 'category', 'label'"),
        (
            lambda: AnnotationSpec.from_dict({"identifier": "m", "type": "text", "unit": "mm"}),
            r"an annotation spec has unknown key\(s\) 'unit'; accepted keys: 'identifier'",
        ),
        (lambda: AnnotationSpec.from_dict({"type": "text"}), r"missing required key\(s\) 'identif"),
    ],
)
def test_invalid_specs_are_refused_with_what_was_wrong(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_public_names_are_pinned() -> None:
    assert sorted(annotations.__all__) == [
        "Annotation",
        "AnnotationScope",
        "AnnotationSpec",
        "AnnotationType",
        "BoxAnnotation",
        "CategoryAnnotation",
        "LineAnnotation",
        "NumericAnnotation",
        "PointAnnotation",
        "SegmentationAnnotation",
        "TextAnnotation",
        "decode_mask_rle",
        "encode_mask_rle",
    ]
    assert [kind.value for kind in AnnotationType] == [
        "category",
        "label",
        "segmentation",
        "square",
        "circle",
        "point",
        "line",
        "region",
        "numeric",
        "text",
    ]
