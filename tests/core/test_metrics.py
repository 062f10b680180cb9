"""Segmentation metrics against values worked out by hand (MONAI's own comparison runs in
tests/torch/test_metrics_against_monai.py, where torch is installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from datamint_core.metrics import (
    METRIC_NAMES,
    average_surface_distance,
    case_mean,
    dice,
    flatten_metrics,
    hausdorff_distance,
    iou,
    segmentation_metrics,
    summarize_metrics,
    surface_dice,
)


def cube(shape: tuple[int, ...], start: tuple[int, ...], size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


# Two 4x4x4 cubes, the prediction one voxel (2 mm) further along the slice axis. Each cube
# has 56 surface voxels (all but its 2x2x2 core). From either surface: 36 voxels lie on the
# other surface (0 mm), 4 face-centre voxels are 1 voxel (1 mm) across from the other
# cube's side, and the 16 voxels of the face beyond the overlap are one slice (2 mm) away.
TRUTH = cube((10, 8, 8), (2, 2, 2), 4)
PREDICTION = cube((10, 8, 8), (3, 2, 2), 4)
SPACING = (2.0, 1.0, 1.0)


def test_two_cubes_one_slice_apart_give_the_values_worked_out_by_hand():
    case = segmentation_metrics(PREDICTION, TRUTH, spacing=SPACING, tolerance_mm=1.0)

    assert list(case) == ["1"]
    row = case["1"]
    assert list(row) == list(METRIC_NAMES)
    assert row["dice"] == pytest.approx(2 * 48 / 128)
    assert row["iou"] == pytest.approx(48 / 80)
    # 95th percentile of [0]*36 + [1]*4 + [2]*16 (linear interpolation at 52.25): 2 mm.
    assert row["hd95"] == pytest.approx(2.0)
    assert row["assd"] == pytest.approx(2 * (4 * 1 + 16 * 2) / 112)
    assert row["nsd"] == pytest.approx(2 * 40 / 112)


def test_the_surface_dice_counts_the_voxels_within_the_tolerance_in_millimetres():
    assert surface_dice(PREDICTION, TRUTH, spacing=SPACING, tolerance_mm=0.5) == pytest.approx(
        72 / 112
    )
    assert surface_dice(PREDICTION, TRUTH, spacing=SPACING, tolerance_mm=1.99) == pytest.approx(
        80 / 112
    )
    assert surface_dice(PREDICTION, TRUTH, spacing=SPACING, tolerance_mm=2.0) == 1.0


def test_distances_follow_the_spacing_of_each_axis():
    # The same one-voxel shift measures 2 mm along an axis of 2 mm voxels, 0.5 mm along one
    # of 0.5 mm voxels, and the in-plane spacing changes only the 1-voxel side distances.
    assert hausdorff_distance(PREDICTION, TRUTH, spacing=(2.0, 1.0, 1.0)) == pytest.approx(2.0)
    assert hausdorff_distance(PREDICTION, TRUTH, spacing=(0.5, 3.0, 3.0)) == pytest.approx(0.5)
    assert hausdorff_distance(PREDICTION, TRUTH, spacing=(0.5, 3.0, 3.0), percentile=None) == (
        pytest.approx(0.5)
    )
    # A face-centre voxel is 1 voxel from the other cube's side (0.25 mm here), 1 slice from
    # its face (2 mm): the nearer counts.
    assert average_surface_distance(PREDICTION, TRUTH, spacing=(2.0, 0.25, 0.25)) == (
        pytest.approx(2 * (4 * 0.25 + 16 * 2.0) / 112)
    )
    assert hausdorff_distance(PREDICTION, TRUTH) == pytest.approx(1.0)  # 1 mm voxels


def test_two_squares_in_a_2d_image_are_measured_in_the_plane():
    truth = cube((12, 12), (2, 2), 5)
    prediction = cube((12, 12), (2, 4), 5)  # two columns (1 mm) to the right
    case = segmentation_metrics(prediction, truth, spacing=(0.7, 0.5))["1"]

    assert case["dice"] == pytest.approx(2 * 15 / 50)
    assert case["iou"] == pytest.approx(15 / 35)
    assert case["hd95"] == pytest.approx(1.0)
    assert hausdorff_distance(prediction, truth, spacing=(0.7, 0.5), percentile=None) == (
        pytest.approx(1.0)
    )


def test_each_label_of_a_label_map_is_scored_on_its_own_under_its_name():
    truth = np.zeros((20, 16, 16), dtype=np.uint8)
    prediction = np.zeros_like(truth)
    truth[TRUTH[:10, :8, :8].nonzero()] = 1
    prediction[PREDICTION[:10, :8, :8].nonzero()] = 1
    truth[12:16, 10:14, 10:14] = 2
    prediction[12:16, 10:14, 10:14] = 2

    case = segmentation_metrics(
        prediction, truth, labels={"0": "background", "1": "liver", "2": "tumour", "3": "cyst"},
        spacing=SPACING,
    )

    assert list(case) == ["liver", "tumour", "cyst"]
    assert case["liver"]["dice"] == pytest.approx(0.75)
    assert case["tumour"] == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    assert all(math.isnan(value) for value in case["cyst"].values())
    assert case_mean(case)["dice"] == pytest.approx((0.75 + 1.0) / 2)


def test_labels_default_to_the_values_present_in_either_map():
    truth = np.zeros((6, 6), dtype=np.int16)
    truth[1:3, 1:3] = 4
    prediction = np.zeros_like(truth)
    prediction[3:5, 3:5] = 7

    assert list(segmentation_metrics(prediction, truth)) == ["4", "7"]


@pytest.mark.parametrize(
    ("prediction", "truth", "expected"),
    [
        # both empty: nothing to score
        (False, False, {"dice": math.nan, "iou": math.nan, "hd95": math.nan,
                        "assd": math.nan, "nsd": math.nan}),
        # a missed structure
        (False, True, {"dice": 0.0, "iou": 0.0, "hd95": math.nan, "assd": math.inf, "nsd": 0.0}),
        # a structure found where there is none (MONAI's default ignores Dice/IoU then)
        (True, False, {"dice": math.nan, "iou": math.nan, "hd95": math.nan,
                       "assd": math.inf, "nsd": 0.0}),
    ],
    ids=["both-empty", "prediction-empty", "truth-empty"],
)
def test_empty_masks_give_the_documented_values(prediction, truth, expected):
    full = cube((8, 8, 8), (2, 2, 2), 3)
    empty = np.zeros_like(full)
    case = segmentation_metrics(
        full if prediction else empty, full if truth else empty, labels=[1], spacing=SPACING
    )["1"]

    assert case == pytest.approx(expected, nan_ok=True)


def test_ignore_empty_false_scores_an_empty_truth_as_monai_does():
    full = cube((8, 8), (2, 2), 3)
    empty = np.zeros_like(full)

    assert dice(empty, empty, ignore_empty=False) == 1.0
    assert iou(empty, empty, ignore_empty=False) == 1.0
    assert dice(full, empty, ignore_empty=False) == 0.0
    assert iou(full, empty, ignore_empty=False) == 0.0
    assert math.isnan(dice(full, empty))


def test_a_mask_touching_the_border_has_its_border_voxels_on_its_surface():
    # The whole image is the mask: every border voxel is a surface voxel, none inside is.
    full = np.ones((5, 5), dtype=bool)
    shifted = np.zeros((5, 5), dtype=bool)
    shifted[1:, :] = True

    assert hausdorff_distance(full, full) == 0.0
    assert hausdorff_distance(shifted, full, percentile=None) == pytest.approx(1.0)


def test_summaries_are_monai_means_skipping_undefined_values():
    cases = [
        {"liver": {"dice": 0.8, "hd95": 2.0}, "tumour": {"dice": 0.4, "hd95": 6.0}},
        {"liver": {"dice": 0.6, "hd95": 4.0}, "tumour": {"dice": math.nan, "hd95": math.nan}},
    ]

    summary = summarize_metrics(cases)

    # reduction="mean": each case's mean over labels, then over cases
    assert summary["dice"] == pytest.approx(((0.8 + 0.4) / 2 + 0.6) / 2)
    assert summary["hd95"] == pytest.approx(((2 + 6) / 2 + 4) / 2)
    # reduction="mean_batch": each label over the cases that define it
    assert summary["dice/liver"] == pytest.approx(0.7)
    assert summary["dice/tumour"] == pytest.approx(0.4)
    assert list(summary) == ["dice", "hd95", "dice/liver", "dice/tumour", "hd95/liver",
                             "hd95/tumour"]
    assert math.isnan(summarize_metrics([{"a": {"dice": math.nan}}])["dice"])
    assert summarize_metrics([]) == {}
    assert flatten_metrics(cases[0]) == {
        "dice/liver": 0.8, "hd95/liver": 2.0, "dice/tumour": 0.4, "hd95/tumour": 6.0
    }


def test_a_missed_structure_keeps_the_mean_distance_infinite():
    cases = [{"liver": {"assd": 3.0}}, {"liver": {"assd": math.inf}}]

    assert summarize_metrics(cases)["assd/liver"] == math.inf
    full, empty = np.ones((4, 4), dtype=bool), np.zeros((4, 4), dtype=bool)
    assert hausdorff_distance(empty, full, percentile=None) == math.inf
    assert math.isnan(hausdorff_distance(empty, full, percentile=95))
    assert math.isnan(hausdorff_distance(empty, empty, percentile=None))


def test_whole_number_float_label_maps_are_accepted_as_nifti_readers_return_them():
    as_float = TRUTH.astype(np.float64)

    assert segmentation_metrics(as_float, as_float)["1"]["dice"] == 1.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: segmentation_metrics(TRUTH, TRUTH[:, :, :4]), "same shape"),
        (lambda: segmentation_metrics(TRUTH[0, 0], TRUTH[0, 0]), "2-D image (H, W) or a 3-D"),
        (lambda: segmentation_metrics(TRUTH * 0.5, TRUTH), "threshold probabilities"),
        (lambda: segmentation_metrics(TRUTH.astype(str), TRUTH), "integer label map"),
        (lambda: segmentation_metrics(TRUTH, TRUTH, spacing=(1, 1)), "3 positive numbers"),
        (lambda: segmentation_metrics(TRUTH, TRUTH, spacing=(1, 0, 1)), "3 positive numbers"),
        (lambda: segmentation_metrics(TRUTH, TRUTH, spacing="1mm"), "3 positive numbers"),
        (lambda: segmentation_metrics(TRUTH, TRUTH, spacing=math.nan), "3 positive numbers"),
        (lambda: segmentation_metrics(TRUTH, TRUTH, labels="liver"), "{value: name} mapping"),
        (lambda: segmentation_metrics(TRUTH, TRUTH, labels={"one": "x"}), "an integer value"),
        (lambda: segmentation_metrics(TRUTH, TRUTH, labels={1: "a", 2: "a"}), "each name once"),
        (lambda: segmentation_metrics(TRUTH, TRUTH, labels={1: 5}), "must be strings"),
        (lambda: segmentation_metrics(TRUTH, TRUTH, tolerance_mm=-1), "0 or more"),
        (lambda: segmentation_metrics(TRUTH, TRUTH, tolerance_mm=math.inf), "finite number"),
        (
            lambda: segmentation_metrics(TRUTH, TRUTH, labels=[1, 2], tolerance_mm={1: 2.0}),
            "gives none for the labels ['2']",
        ),
        (lambda: hausdorff_distance(TRUTH, TRUTH, percentile=101), "from 0 to 100"),
    ],
)
def test_bad_inputs_say_what_was_wrong_and_what_is_accepted(call, message):
    with pytest.raises(ValueError) as raised:
        call()
    assert message in str(raised.value)


def test_tolerances_can_be_given_per_label_by_value_or_name():
    truth = np.zeros((10, 8, 8), dtype=np.uint8)
    truth[TRUTH] = 1
    prediction = np.zeros_like(truth)
    prediction[PREDICTION] = 1

    strict = segmentation_metrics(prediction, truth, labels={1: "a"}, spacing=SPACING,
                                  tolerance_mm={"a": 0.5})
    loose = segmentation_metrics(prediction, truth, labels={1: "a"}, spacing=SPACING,
                                 tolerance_mm={1: 2.0})

    assert strict["a"]["nsd"] == pytest.approx(72 / 112)
    assert loose["a"]["nsd"] == 1.0


def test_without_scipy_the_surface_metrics_name_the_extra_to_install(run_python):
    out = run_python(
        """
        import sys
        sys.modules["scipy"] = None  # as if scipy were not installed
        import numpy as np
        from datamint_core.metrics import dice, hausdorff_distance
        mask = np.ones((3, 3), dtype=bool)
        print(dice(mask, mask))
        try:
            hausdorff_distance(mask, mask)
        except ImportError as error:
            print(error)
        """
    )
    assert out.splitlines() == [
        "1.0",
        'Surface distances (hd95, assd, nsd) need scipy, which is not installed: '
        'pip install "datamint[metrics]"',
    ]


_masks = hnp.arrays(
    bool,
    st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7)),
    elements=st.booleans(),
)
_spacings = st.tuples(*[st.floats(0.1, 5.0) for _ in range(3)])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), spacing=_spacings)
def test_metrics_are_symmetric_in_prediction_and_truth(data, spacing):
    a = data.draw(_masks)
    b = data.draw(hnp.arrays(bool, a.shape, elements=st.booleans()))
    forward = segmentation_metrics(a, b, labels=[1], spacing=spacing, ignore_empty=False)["1"]
    backward = segmentation_metrics(b, a, labels=[1], spacing=spacing, ignore_empty=False)["1"]

    assert forward == pytest.approx(backward, nan_ok=True)


@settings(max_examples=60, deadline=None)
@given(mask=_masks, spacing=_spacings)
def test_a_perfect_prediction_scores_perfectly(mask, spacing):
    case = segmentation_metrics(mask, mask, labels=[1], spacing=spacing)["1"]

    if mask.any():
        assert case == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    else:
        assert all(math.isnan(value) for value in case.values())


@settings(max_examples=40, deadline=None)
@given(data=st.data(), spacing=_spacings, factor=st.floats(0.25, 4.0))
def test_distances_scale_with_the_voxel_size(data, spacing, factor):
    a = data.draw(_masks)
    b = data.draw(hnp.arrays(bool, a.shape, elements=st.booleans()))
    scaled = tuple(s * factor for s in spacing)

    for measure in (hausdorff_distance, average_surface_distance):
        base, larger = measure(a, b, spacing=spacing), measure(a, b, spacing=scaled)
        if math.isfinite(base):
            assert larger == pytest.approx(base * factor)
        else:
            assert larger == base or (math.isnan(base) and math.isnan(larger))


def test_the_metrics_module_exports_exactly_this_and_imports_scipy_only_when_measuring(
    run_python,
):
    import datamint_core.metrics as metrics

    assert sorted(metrics.__all__) == [
        "METRIC_NAMES", "average_surface_distance", "case_mean", "dice", "flatten_metrics",
        "hausdorff_distance", "iou", "segmentation_metrics", "summarize_metrics",
        "surface_dice",
    ]
    out = run_python(
        """
        import sys
        import datamint_core.metrics, datamint_core.evaluation
        print(sorted(m for m in ("scipy", "torch", "pyarrow", "mlflow.models.evaluation")
                     if m in sys.modules))
        """
    )
    assert out.strip() == "[]"


_anything = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True),
    st.text(max_size=3), st.lists(st.floats(-2, 5), max_size=4),
    st.dictionaries(st.one_of(st.integers(-1, 3), st.text(max_size=2)), st.text(max_size=3),
                    max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(
    prediction=hnp.arrays(
        st.sampled_from([np.uint8, np.int16, np.float32, np.bool_]),
        hnp.array_shapes(min_dims=1, max_dims=4, max_side=5),
    ),
    spacing=_anything,
    labels=_anything,
    tolerance=_anything,
)
def test_any_input_gives_metrics_or_a_value_error_that_says_what_is_accepted(
    prediction, spacing, labels, tolerance
):
    try:
        case = segmentation_metrics(prediction, prediction, spacing=spacing, labels=labels,
                                    tolerance_mm=tolerance)
    except ValueError as error:
        assert "accepted" in str(error) or "must" in str(error), error
    else:
        for row in case.values():
            assert set(row) == set(METRIC_NAMES)
            assert all(isinstance(value, float) for value in row.values())


@pytest.mark.parametrize(
    "cases",
    [
        {"liver": {"dice": 0.9}},  # one case, not a list of cases
        [{"dice": 0.9, "iou": 0.8}],  # a case's mean, not its labels
        [{"dice/liver": 0.9}],  # a flattened case
        ["liver"],
    ],
)
def test_summarize_metrics_given_something_other_than_cases_says_what_it_takes(cases):
    with pytest.raises(ValueError, match=r"summarize_metrics takes a list of cases.*\[case\]"):
        summarize_metrics(cases)
