"""The core's segmentation metrics equal MONAI's on the same masks.

MONAI (torch) is the reference: ``DiceMetric``, ``MeanIoU``,
``HausdorffDistanceMetric(percentile=95)``, ``SurfaceDistanceMetric(symmetric=True)`` and
``SurfaceDiceMetric``, on one-hot masks without the background channel. Overlap values
(Dice, IoU, normalized surface Dice) agree within 1e-6, distances within 1e-3 mm, and the
empty-mask values (nan, inf, 0) agree exactly.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from datamint_core.metrics import segmentation_metrics

monai_metrics = pytest.importorskip("monai.metrics", reason="the reference needs MONAI")
torch = pytest.importorskip("torch")

OVERLAP_TOLERANCE = 1e-6
DISTANCE_TOLERANCE_MM = 1e-3


def monai_values(
    prediction: np.ndarray,
    truth: np.ndarray,
    labels: list[int],
    spacing: tuple[float, ...],
    tolerance_mm: float,
    ignore_empty: bool = True,
) -> dict[int, dict[str, float]]:
    """MONAI's five metrics for each label, from one-hot (background first) tensors."""

    def one_hot(label_map: np.ndarray) -> torch.Tensor:
        channels = [label_map == 0] + [label_map == value for value in labels]
        return torch.from_numpy(np.stack(channels)[None].astype(np.float32))

    y_pred, y = one_hot(prediction), one_hot(truth)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about every empty mask
        values = {
            "dice": monai_metrics.DiceMetric(
                include_background=False, reduction="none", ignore_empty=ignore_empty
            )(y_pred, y),
            "iou": monai_metrics.MeanIoU(
                include_background=False, reduction="none", ignore_empty=ignore_empty
            )(y_pred, y),
            "hd95": monai_metrics.HausdorffDistanceMetric(
                include_background=False, percentile=95, reduction="none"
            )(y_pred, y, spacing=list(spacing)),
            "assd": monai_metrics.SurfaceDistanceMetric(
                include_background=False, symmetric=True, reduction="none"
            )(y_pred, y, spacing=list(spacing)),
            "nsd": monai_metrics.SurfaceDiceMetric(
                class_thresholds=[tolerance_mm] * len(labels),
                include_background=False,
                reduction="none",
            )(y_pred, y, spacing=list(spacing)),
        }
    return {
        value: {name: float(result[0, index]) for name, result in values.items()}
        for index, value in enumerate(labels)
    }


def assert_equal_to_monai(
    prediction: np.ndarray,
    truth: np.ndarray,
    labels: list[int],
    spacing: tuple[float, ...],
    tolerance_mm: float,
    ignore_empty: bool = True,
) -> dict[str, dict[str, float]]:
    ours = segmentation_metrics(
        prediction,
        truth,
        labels=labels,
        spacing=spacing,
        tolerance_mm=tolerance_mm,
        ignore_empty=ignore_empty,
    )
    reference = monai_values(prediction, truth, labels, spacing, tolerance_mm, ignore_empty)
    for value in labels:
        for metric, expected in reference[value].items():
            got = ours[str(value)][metric]
            where = f"label {value}, {metric}: ours {got!r}, MONAI {expected!r}"
            if math.isnan(expected) or math.isinf(expected):
                assert got == expected or (math.isnan(got) and math.isnan(expected)), where
            else:
                tolerance = DISTANCE_TOLERANCE_MM if metric in ("hd95", "assd") else (
                    OVERLAP_TOLERANCE
                )
                assert abs(got - expected) <= tolerance, where
    return ours


def blobs(
    rng: np.random.Generator, shape: tuple[int, ...], labels: int, count: int
) -> np.ndarray:
    """A label map of random overlapping ellipsoids (ellipses in 2-D), organ-like masks."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    label_map = np.zeros(shape, dtype=np.uint8)
    for _ in range(count):
        centre = [rng.uniform(0, n) for n in shape]
        radii = [rng.uniform(1.0, n / 2.5) for n in shape]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
        label_map[inside] = rng.integers(1, labels + 1)
    return label_map


@pytest.mark.parametrize("seed", range(8))
def test_metrics_equal_monai_on_organ_like_3d_label_maps_with_anisotropic_voxels(seed):
    rng = np.random.default_rng(seed)
    shape = (12, 30, 34)
    truth = blobs(rng, shape, labels=3, count=4)
    # The prediction: the truth shifted and with its own blobs, so the two differ.
    prediction = np.roll(truth, shift=(int(rng.integers(-2, 3)), int(rng.integers(-3, 4)), 0),
                         axis=(0, 1, 2))
    prediction[blobs(rng, shape, labels=3, count=2) > 0] = rng.integers(0, 4)
    spacing = (float(rng.uniform(1.5, 5.0)), float(rng.uniform(0.4, 1.2)),
               float(rng.uniform(0.4, 1.2)))

    ours = assert_equal_to_monai(prediction, truth, [1, 2, 3, 4], spacing, tolerance_mm=1.5)

    assert all(math.isnan(v) for v in ours["4"].values())  # a label in neither map


@pytest.mark.parametrize("seed", range(4))
def test_metrics_equal_monai_on_2d_label_maps(seed):
    rng = np.random.default_rng(100 + seed)
    truth = blobs(rng, (40, 52), labels=2, count=3)
    prediction = blobs(rng, (40, 52), labels=2, count=3)

    assert_equal_to_monai(prediction, truth, [1, 2], (0.7, 0.35), tolerance_mm=1.0)


@pytest.mark.parametrize("ignore_empty", [True, False])
@pytest.mark.parametrize(
    ("prediction_empty", "truth_empty"), [(True, True), (True, False), (False, True)],
    ids=["both-empty", "prediction-empty", "truth-empty"],
)
def test_empty_masks_give_monai_s_values(prediction_empty, truth_empty, ignore_empty):
    mask = np.zeros((6, 9, 9), dtype=np.uint8)
    mask[2:4, 3:7, 2:6] = 1
    empty = np.zeros_like(mask)

    ours = assert_equal_to_monai(
        empty if prediction_empty else mask,
        empty if truth_empty else mask,
        [1],
        (3.0, 0.8, 0.8),
        tolerance_mm=1.0,
        ignore_empty=ignore_empty,
    )["1"]

    if prediction_empty and truth_empty:
        assert math.isnan(ours["hd95"]) and math.isnan(ours["nsd"])
    else:
        assert math.isnan(ours["hd95"]) and ours["assd"] == math.inf and ours["nsd"] == 0.0


def test_masks_touching_the_image_border_equal_monai():
    truth = np.zeros((5, 8, 8), dtype=np.uint8)
    truth[:, :5, :] = 1
    prediction = np.zeros_like(truth)
    prediction[1:, 2:, 3:] = 1

    assert_equal_to_monai(prediction, truth, [1], (2.0, 0.5, 0.9), tolerance_mm=0.9)


_shapes = st.one_of(
    st.tuples(st.integers(1, 9), st.integers(1, 9)),
    st.tuples(st.integers(1, 6), st.integers(1, 8), st.integers(1, 8)),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), tolerance=st.sampled_from([0.0, 0.5, 1.0, 2.3]))
def test_metrics_equal_monai_on_generated_label_maps(data, tolerance):
    shape = data.draw(_shapes)
    labels = hnp.arrays(np.uint8, shape, elements=st.integers(0, 2))
    prediction, truth = data.draw(labels), data.draw(labels)
    spacing = data.draw(st.tuples(*[st.floats(0.2, 4.0) for _ in shape]))

    assert_equal_to_monai(prediction, truth, [1, 2], spacing, tolerance_mm=tolerance)
