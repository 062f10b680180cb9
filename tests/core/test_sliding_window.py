"""``volume`` mode through a patch handler: a sliding window, in numpy (the core's backend)."""

from __future__ import annotations

import itertools
import re
import time
import tracemalloc

import mlflow.pyfunc
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamint_core import (
    BaseDatamintModel,
    InputTooLargeError,
    InvalidRequestError,
    ModelSettings,
    PatchResultError,
    RequestDeadlineExceeded,
    SegmentationAnnotation,
    VolumeResource,
    load_model,
    save_model,
)
from datamint_core._limits import RequestLimits, applying
from datamint_core.sliding_window import (
    SlidingWindow,
    importance_map,
    iter_blended_slabs,
    patch_handler,
    run_sliding_window,
    window_corners,
    window_starts,
)

CLASSES = ("background", "dark", "bright")


def pointwise_scores(patches: np.ndarray) -> np.ndarray:
    """Scores that depend on each voxel alone: any tiling must blend them back unchanged."""
    x = patches[:, 0]
    return np.stack([np.zeros_like(x), -x - 1.0, x - 1.0], axis=1)


def pointwise_labels(volume: np.ndarray) -> np.ndarray:
    scores = pointwise_scores(volume[None, None].astype(np.float32))[0]
    return scores.argmax(axis=0).astype(np.uint8)


class PatchSegmenter(BaseDatamintModel):
    """A 3-D 'network' on 8x8x8 patches that records what it was given."""

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self.batches: list[np.ndarray] = []

    @patch_handler(roi_size=(8, 8, 8), overlap=0.5, sw_batch_size=3, class_names=CLASSES,
                   limits={"roi_size": [[4, 4, 4], [16, 16, 16]]})
    def segment(self, patches):
        self.batches.append(patches)
        return pointwise_scores(patches)


class ConventionSegmenter(BaseDatamintModel):
    """A patch handler by convention name; its window comes from the settings alone."""

    def predict_patch(self, patches, **params):
        return pointwise_scores(patches)

    def predict_image(self, model_input, **kwargs):
        raise AssertionError("volume mode must use the patch handler, not the slice bridge")


class LabelPatchSegmenter(BaseDatamintModel):
    @patch_handler(roi_size=6, overlap=0.25, class_names=CLASSES)
    def segment(self, patches):
        scores = pointwise_scores(patches)
        return scores.argmax(axis=1).astype(np.int64)


def label_map_of(annotations, shape) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint8)
    for annotation in annotations:
        assert isinstance(annotation, SegmentationAnnotation)
        labels[annotation.mask] = CLASSES.index(annotation.identifier)
    return labels


def seeded_volume(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# -- the tiling -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "roi", "overlap", "starts"),
    [
        (20, 8, 0.5, [0, 4, 8, 12]),
        (21, 8, 0.5, [0, 4, 8, 12, 13]),  # the last window moves back to end at the border
        (8, 8, 0.5, [0]),  # exactly one window: no second start
        (10, 4, 0.0, [0, 4, 6]),
        (96, 64, 0.25, [0, 32]),
        (10, 3, 0.9, list(range(8))),  # an interval below 1 voxel is 1
    ],
)
def test_windows_start_where_monai_starts_them(size, roi, overlap, starts):
    assert window_starts(size, roi, overlap) == starts


def test_patches_are_cut_at_the_window_corners_in_d_h_w_order():
    volume = np.arange(13 * 20 * 9, dtype=np.float32).reshape(13, 20, 9)
    model = PatchSegmenter()
    model.predict([VolumeResource(volume)], {"mode": "volume"})

    patches = np.concatenate(model.batches)
    corners = window_corners(volume.shape, model.router.sliding_window())
    assert corners == list(itertools.product([0, 4, 5], [0, 4, 8, 12], [0, 1]))
    assert [batch.shape[0] for batch in model.batches] == [3] * 8
    for patch, (d, h, w) in zip(patches, corners, strict=True):
        np.testing.assert_array_equal(patch[0], volume[d : d + 8, h : h + 8, w : w + 8])


def test_gaussian_importance_map_is_monais_formula():
    window = SlidingWindow(roi_size=(5, 4, 3), blend_mode="gaussian", sigma_scale=(0.5, 0.25, 1))
    axes = [
        np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * (size * scale) ** 2))
        for size, scale in zip((5, 4, 3), (0.5, 0.25, 1), strict=True)
    ]
    expected = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    np.testing.assert_allclose(importance_map(window), np.maximum(expected, 1e-3), rtol=1e-6)
    assert importance_map(window).dtype == np.float32


# -- volume mode through the patch handler ---------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.tuples(st.integers(1, 19), st.integers(1, 19), st.integers(1, 19)),
    overlap=st.sampled_from([0.0, 0.25, 0.5, 0.75]),
    blend_mode=st.sampled_from(["constant", "gaussian"]),
    padding_mode=st.sampled_from(["constant", "reflect", "replicate", "circular"]),
    sw_batch_size=st.integers(1, 3),
)
def test_any_volume_size_gets_a_label_for_every_voxel(
    shape, overlap, blend_mode, padding_mode, sw_batch_size
):
    volume = seeded_volume(shape)
    model = PatchSegmenter()
    (annotations,) = model.predict(
        [VolumeResource(volume, spacing=(2.0, 1.0, 0.5))],
        {"mode": "volume", "overlap": overlap, "blend_mode": blend_mode,
         "padding_mode": padding_mode, "sw_batch_size": sw_batch_size},
    )

    np.testing.assert_array_equal(label_map_of(annotations, shape), pointwise_labels(volume))
    assert {a.identifier for a in annotations} <= {"dark", "bright"}  # background is not reported
    assert all(a.scope.value == "volume" and a.spacing == (2.0, 1.0, 0.5) for a in annotations)


def test_blended_slabs_cover_the_volume_once_in_order_and_equal_the_pointwise_scores():
    volume = seeded_volume((29, 11, 10))
    window = SlidingWindow(roi_size=(8, 8, 8), overlap=0.25, blend_mode="gaussian")
    seen = []
    for start, stop, scores in iter_blended_slabs(volume, pointwise_scores, window):
        expected = pointwise_scores(volume[None, None, start:stop])[0]
        np.testing.assert_allclose(scores, expected, atol=1e-5)
        seen.append((start, stop))

    assert seen[0][0] == 0 and seen[-1][1] == 29
    assert all(a[1] == b[0] for a, b in itertools.pairwise(seen))
    assert max(stop - start for start, stop in seen) <= 8  # a slab is at most one window deep


def test_a_label_patch_handler_is_blended_as_one_hot_votes():
    volume = seeded_volume((14, 9, 13))
    (annotations,) = LabelPatchSegmenter().predict([VolumeResource(volume)], {"mode": "volume"})
    np.testing.assert_array_equal(label_map_of(annotations, volume.shape), pointwise_labels(volume))


def test_threshold_reduction_gives_one_mask_per_class_that_may_overlap():
    volume = seeded_volume((10, 10, 10))
    model = ConventionSegmenter(
        settings={"sliding_window": {"roi_size": [4, 4, 4], "reduction": "threshold",
                                     "threshold": -1.5, "background": None,
                                     "class_names": list(CLASSES)}}
    )
    (annotations,) = model.predict([VolumeResource(volume)], {"mode": "volume"})
    masks = {a.identifier: a.mask for a in annotations}

    assert set(masks) == set(CLASSES)
    np.testing.assert_array_equal(masks["dark"], -volume - 1 >= -1.5)
    np.testing.assert_array_equal(masks["bright"], volume - 1 >= -1.5)


def test_a_channel_last_volume_reaches_the_handler_as_channel_first_patches():
    volume = seeded_volume((9, 7, 6, 2))
    window = SlidingWindow(roi_size=(4, 4, 4), overlap=0.5)
    batches = []

    def handler(patches):
        batches.append(patches)
        return np.stack([patches[:, 0], patches[:, 1]], axis=1)  # channel 1 wins where larger

    labels = run_sliding_window(volume, handler, window)

    assert all(batch.shape[1:] == (2, 4, 4, 4) for batch in batches)
    np.testing.assert_array_equal(labels, volume.argmax(axis=-1))


def test_a_multi_channel_volume_resource_is_segmented_with_spatial_masks():
    class TwoModalities(BaseDatamintModel):
        @patch_handler(roi_size=(4, 6, 6), overlap=0.25, class_names=CLASSES)
        def segment(self, patches):
            assert patches.shape[1] == 2  # (N, C, d, h, w): channels first, as MONAI has them
            return np.concatenate([np.zeros_like(patches[:, :1]), patches], axis=1)

    pixels = seeded_volume((7, 9, 8, 2))
    volume = VolumeResource(pixels, channel_names=["t1", "t2"], spacing=(3.0, 1.0, 1.0))
    (annotations,) = TwoModalities().predict([volume], {"mode": "volume"})

    expected = np.concatenate([np.zeros_like(pixels[..., :1]), pixels], axis=-1).argmax(-1)
    np.testing.assert_array_equal(label_map_of(annotations, (7, 9, 8)), expected)
    assert all(a.mask.shape == (7, 9, 8) and a.spacing == (3.0, 1.0, 1.0) for a in annotations)


def test_the_patch_handler_wins_over_the_slice_bridge_and_patch_is_not_a_request_mode():
    model = ConventionSegmenter(settings={"sliding_window": {"roi_size": 4}})
    volume = seeded_volume((5, 6, 7))
    (annotations,) = model.predict([VolumeResource(volume)], {"mode": "default"})
    np.testing.assert_array_equal(
        label_map_of([a.with_fields(identifier=CLASSES[int(a.identifier[-1])])
                      for a in annotations], volume.shape),
        pointwise_labels(volume),
    )
    assert "patch" not in model.get_supported_modes()
    with pytest.raises(InvalidRequestError, match="'patch' is not a prediction mode a request"):
        model.predict([VolumeResource(volume)], {"mode": "patch"})


def test_model_settings_update_what_the_decorator_declares_and_survive_a_save(tmp_path):
    model = PatchSegmenter(settings=ModelSettings(sliding_window={"overlap": 0.0,
                                                                  "sw_batch_size": 2}))
    window = model.router.sliding_window()
    assert (window.roi_size, window.overlap, window.sw_batch_size) == ((8, 8, 8), (0, 0, 0), 2)
    volume = seeded_volume((12, 12, 12))
    expected = model.predict([VolumeResource(volume)], {"mode": "volume"})

    save_model(model, tmp_path / "m")
    block = yaml.safe_load((tmp_path / "m" / "MLmodel").read_text())["flavors"]["datamint"]
    assert block["model_settings"]["sliding_window"] == {"overlap": [0.0, 0.0, 0.0],
                                                         "sw_batch_size": 2}
    assert load_model(tmp_path / "m").predict([VolumeResource(volume)],
                                              {"mode": "volume"}) == expected
    # through MLflow's own pyfunc, whose params schema types the window params
    pyfunc = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    assert pyfunc.predict([VolumeResource(volume)],
                          params={"mode": "volume", "overlap": 0.0, "sw_batch_size": 1,
                                  "blend_mode": "constant"}) == [
        [annotation.to_dict() for annotation in expected[0]]
    ]


# -- limits and errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"overlap": 0.9}, "Param 'overlap'=0.9 is outside this model's limits; accepted: 0.0 to "
                           "0.75."),
        ({"overlap": 1.0}, "Param 'overlap'=1.0 is not valid; accepted: a fraction from 0 up to "
                           "(not including) 1"),
        ({"sw_batch_size": 4}, "Param 'sw_batch_size'=4 is outside this model's limits; "
                               "accepted: 1 to 3."),
        ({"roi_size": [32, 8, 8]}, "Param 'roi_size'=[32, 8, 8] is outside this model's limits; "
                                   "accepted: [4, 4, 4] to [16, 16, 16]."),
        ({"blend_mode": "max"}, "Param 'blend_mode'='max' is not valid; accepted: ['constant', "
                                "'gaussian']."),
        ({"padding_mode": "zeros"}, "Param 'padding_mode'='zeros' is not valid; accepted: "
                                    "['constant', 'reflect', 'replicate', 'circular']."),
        ({"sigma_scale": -1}, "Param 'sigma_scale'=-1 is not valid; accepted: a positive number"),
        ({"temperature": 2}, "does not take the parameter(s) ['temperature']"),
    ],
)
def test_a_request_outside_the_models_limits_is_refused_before_any_patch_runs(params, message):
    model = PatchSegmenter()
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        model.predict([VolumeResource(seeded_volume((9, 9, 9)))], {"mode": "volume", **params})
    assert model.batches == []


def test_a_param_the_model_keeps_fixed_is_named_with_those_a_request_may_set():
    model = ConventionSegmenter(settings={"sliding_window": {"roi_size": 4,
                                                             "limits": {"overlap": None}}})
    with pytest.raises(InvalidRequestError, match=re.escape(
        "Param 'overlap' is fixed by this model at [0.25, 0.25, 0.25]; a request may set "
        "['blend_mode', 'padding_mode', 'padding_value', 'sigma_scale', 'sw_batch_size', "
        "'threshold'].")):
        model.predict([VolumeResource(seeded_volume((5, 5, 5)))], {"mode": "volume",
                                                                    "overlap": 0.5})


@given(overlap=st.one_of(st.floats(allow_nan=True), st.integers(-3, 3), st.text(max_size=3),
                         st.lists(st.floats(0, 0.8), max_size=4)))
@settings(max_examples=60, deadline=None)
def test_any_requested_overlap_runs_or_is_refused_with_what_is_accepted(overlap):
    model = ConventionSegmenter(settings={"sliding_window": {"roi_size": 4}})
    volume = VolumeResource(seeded_volume((6, 5, 4)))
    try:
        (annotations,) = model.predict([volume], {"mode": "volume", "overlap": overlap})
    except InvalidRequestError as error:
        assert "Param 'overlap'" in str(error) and "accepted" in str(error)
    else:
        assert all(a.mask.shape == (6, 5, 4) for a in annotations)


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ({"roi_size": 0}, "roi_size=0 is not valid; accepted: three whole numbers from 1 to"),
        ({"roi_size": (8, 8)}, "roi_size=(8, 8) is not valid"),
        ({"roi_size": 8, "overlap": 1}, "overlap=1 is not valid"),
        ({"roi_size": 8, "patch": 3}, "Unknown sliding-window setting(s) ['patch']; accepted:"),
        ({"roi_size": 8, "limits": {"mode": [0, 1]}}, "limits names ['mode'], which no request "
                                                      "can set"),
        ({"roi_size": 8, "limits": {"overlap": [0.5, 0.1]}}, "low > high"),
        ({"roi_size": 8, "class_names": ["a", "a"]}, "class_names=['a', 'a'] is not valid"),
        ({"roi_size": 8, "class_names": ["a"], "background": 1}, "background=1 is not valid for 1 "
                                                                 "class_names"),
    ],
)
def test_a_bad_declaration_is_refused_when_the_class_is_defined(declaration, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        patch_handler(**declaration)


def test_a_bad_sliding_window_setting_is_refused_by_model_settings():
    with pytest.raises(ValueError, match=re.escape("sw_batch_size=0 is not valid; accepted: a "
                                                   "whole number from 1")):
        ModelSettings(sliding_window={"sw_batch_size": 0})


def test_a_patch_handler_without_a_window_size_says_how_to_declare_one():
    with pytest.raises(ValueError, match=re.escape("The sliding window has no roi_size: declare")):
        ConventionSegmenter().predict([VolumeResource(seeded_volume((4, 4, 4)))],
                                      {"mode": "volume"})


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (lambda p: p[:, 0, :4], "The patch handler returned shape (2, 4, 6, 6) for 2 patch(es) "
                                "of [6, 6, 6]; accepted: per-class scores (2, K, 6, 6, 6) or "
                                "integer labels (2, 6, 6, 6)."),
        (lambda p: np.zeros((2, 5, 6, 6, 6)), "returned 5 channels, but the model declares 3 "
                                              "class_names"),
    ],
)
def test_a_patch_result_of_the_wrong_shape_names_what_is_accepted(result, message):
    class Broken(BaseDatamintModel):
        @patch_handler(roi_size=6, sw_batch_size=2, class_names=CLASSES)
        def segment(self, patches):
            return result(patches)

    with pytest.raises(PatchResultError, match=re.escape(message)):
        Broken().predict([VolumeResource(seeded_volume((6, 6, 12)))], {"mode": "volume"})


def test_label_patches_without_class_names_are_refused_with_the_fix():
    window = SlidingWindow(roi_size=4)
    with pytest.raises(PatchResultError, match=re.escape("declare the classes with class_names")):
        run_sliding_window(seeded_volume((4, 4, 4)), lambda p: np.zeros((1, 4, 4, 4), int), window)


@pytest.mark.parametrize("value", [-1, 3, 255])
def test_label_patches_outside_the_declared_classes_are_refused_naming_the_accepted_range(value):
    window = SlidingWindow(roi_size=4, class_names=("background", "liver", "tumour"))
    with pytest.raises(PatchResultError, match=re.escape("accepted: class indices 0 to 2")):
        run_sliding_window(
            seeded_volume((5, 5, 5)), lambda p: np.full((len(p), 4, 4, 4), value), window
        )


def test_the_request_deadline_stops_the_window_between_patch_batches():
    deadline = time.monotonic() + 2.0
    calls = []

    def handler(patches):
        calls.append(len(patches))
        if len(calls) == 3:  # the deadline passes while the third batch runs
            time.sleep(max(0.0, deadline - time.monotonic()) + 0.01)
        return pointwise_scores(patches)

    window = SlidingWindow(roi_size=4, overlap=0.0)  # 27 batches of one patch
    with applying(RequestLimits(deadline=deadline)), pytest.raises(RequestDeadlineExceeded):
        run_sliding_window(seeded_volume((12, 12, 12)), handler, window)
    assert len(calls) == 3


def test_a_request_over_the_slice_limit_is_refused_before_any_patch_runs():
    model = PatchSegmenter()
    with applying(RequestLimits(max_slices=10)), pytest.raises(
        InputTooLargeError, match="would run 12 slices, over the limit of 10"
    ):
        model.predict([VolumeResource(seeded_volume((12, 8, 8)))], {"mode": "volume"})
    assert model.batches == []


# -- memory -------------------------------------------------------------------------------


def _peak_bytes(classes: int, volume: np.ndarray, window: SlidingWindow) -> int:
    def handler(patches):
        return np.repeat(patches, classes, axis=1) * np.arange(classes, dtype=np.float32)[
            None, :, None, None, None
        ]

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        labels = run_sliding_window(volume, handler, window)
        return tracemalloc.get_traced_memory()[1] - labels.nbytes
    finally:
        tracemalloc.stop()


def test_the_aggregations_peak_memory_follows_the_volume_not_volume_times_classes():
    volume = seeded_volume((96, 64, 64))
    window = SlidingWindow(roi_size=(8, 32, 32), overlap=0.25, sw_batch_size=2)
    two, fourteen = _peak_bytes(2, volume, window), _peak_bytes(14, volume, window)

    slab_plane_bytes = 8 * 64 * 64 * 4  # one class of the slab: roi_d planes of float32
    batch_bytes = 2 * 8 * 32 * 32 * 4  # one class of a patch batch's output
    per_class = (fourteen - two) / 12
    # each class costs its share of the slab and of the batch outputs (and their temporaries) ...
    assert per_class <= 1.5 * slab_plane_bytes + 4 * batch_bytes
    # ... and nothing of the size of the volume, as a whole-volume per-class buffer would
    assert fourteen < 14 * volume.nbytes / 4
