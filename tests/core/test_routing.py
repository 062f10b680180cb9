"""Every path a ``predict`` call can take through the router."""

from __future__ import annotations

import numpy as np
import pytest

from datamint_core import (
    AnnotationScope,
    BaseDatamintModel,
    CategoryAnnotation,
    ImageResource,
    ModeSpec,
    PointAnnotation,
    PredictionMode,
    PredictionRouter,
    SegmentationAnnotation,
    VideoResource,
    VolumeResource,
    WrappedModel,
    prediction_mode,
)
from tests.core.sample_models import MeanClassifier, PlainObjectModel, ThresholdSegmenter


class RecordingImageModel(BaseDatamintModel):
    """Implements only ``predict_image`` and remembers every array it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[np.ndarray]] = []

    def predict_image(self, model_input, **kwargs):
        self.calls.append([r.pixels for r in model_input])
        return [[SegmentationAnnotation("bright", r.pixels > 0.5)] for r in model_input]


class RecordingSliceModel(BaseDatamintModel):
    """Implements only ``predict_slice`` (by convention name)."""

    def __init__(self) -> None:
        super().__init__()
        self.slices: list[tuple[int, str, np.ndarray]] = []

    def predict_slice(self, model_input, slice_index, axis="axial", **kwargs):
        (volume,) = model_input
        view = volume.get_slice(slice_index, axis).pixels
        self.slices.append((slice_index, axis, view))
        return [[SegmentationAnnotation("organ", view > 0.5, confidence=0.5 + slice_index / 100)]]


class DecoratedModel(BaseDatamintModel):
    @prediction_mode(PredictionMode.SLICE, param_keys=("slice_index", "axis"))
    def segment_slice(self, model_input, *, slice_index, axis="axial"):
        return [[CategoryAnnotation("where", f"{axis}-{slice_index}")] for _ in model_input]

    @prediction_mode(PredictionMode.INTERACTIVE, param_keys=("x", "y"), fallback_to_default=False)
    def click(self, model_input, *, x, y):
        return [[PointAnnotation("click", x, y)] for _ in model_input]

    def predict_default(self, model_input, **kwargs):
        return [[CategoryAnnotation("where", "whole")] for _ in model_input]


def volume(depth: int = 40, size: int = 16) -> VolumeResource:
    return VolumeResource(
        np.random.default_rng(1).random((depth, size, size)),
        id="vol",
        spacing=(2.5, 0.8, 0.8),
        affine=np.diag([2.5, 0.8, 0.8, 1.0]),
    )


def test_volume_mode_runs_every_axial_slice_through_predict_slice_on_views():
    model = RecordingSliceModel()
    vol = volume(depth=40)

    (result,) = model.predict([vol], params={"mode": "volume"})

    assert [index for index, _, _ in model.slices] == list(range(40))
    assert all(axis == "axial" for _, axis, _ in model.slices)
    assert all(np.shares_memory(view, vol.pixels) for _, _, view in model.slices)
    (organ,) = result
    assert organ.scope is AnnotationScope.VOLUME
    assert organ.mask.shape == (40, 16, 16)
    np.testing.assert_array_equal(organ.mask, vol.pixels > 0.5)


def test_volume_mask_keeps_the_volume_spacing_and_affine():
    (result,) = RecordingSliceModel().predict([volume(depth=4)], params={"mode": "volume"})
    assert result[0].spacing == (2.5, 0.8, 0.8)
    np.testing.assert_array_equal(result[0].affine, np.diag([2.5, 0.8, 0.8, 1.0]))


def test_volume_mode_goes_through_slice_and_image_bridges_when_only_image_is_implemented():
    model = RecordingImageModel()
    vol = volume(depth=40)

    (result,) = model.predict([vol], params={"mode": "volume"})

    assert len(model.calls) == 40
    assert all(np.shares_memory(arrays[0], vol.pixels) for arrays in model.calls)
    np.testing.assert_array_equal(result[0].mask, vol.pixels > 0.5)


def test_slice_bridge_passes_the_chosen_slice_as_a_view_and_stamps_where_it_lies():
    model = RecordingImageModel()
    vol = volume(depth=10)

    ((annotation,),) = model.predict(
        [vol], params={"mode": "slice", "slice_index": 3, "axis": "coronal"}
    )

    (view,) = model.calls[0]
    assert view.shape == (10, 16)
    assert np.shares_memory(view, vol.pixels)
    assert (annotation.scope, annotation.slice_index, annotation.slice_axis) == (
        AnnotationScope.SLICE,
        3,
        "coronal",
    )


def test_frame_bridge_predicts_on_one_frame_view():
    model = RecordingImageModel()
    video = VideoResource(np.random.default_rng(2).random((6, 8, 8)))

    ((annotation,),) = model.predict([video], params={"mode": "frame", "frame_index": 4})

    assert np.shares_memory(model.calls[0][0], video.pixels)
    np.testing.assert_array_equal(model.calls[0][0], video.pixels[4])
    assert (annotation.scope, annotation.frame_index) == (AnnotationScope.FRAME, 4)


def test_all_frames_bridge_gives_one_annotation_per_frame_in_one_image_call():
    model = RecordingImageModel()
    video = VideoResource(np.random.default_rng(3).random((5, 8, 8)))

    (result,) = model.predict([video], params={"mode": "all_frames"})

    assert len(model.calls) == 1 and len(model.calls[0]) == 5
    assert [a.frame_index for a in result] == [0, 1, 2, 3, 4]


def test_bridges_are_advertised_only_when_their_prerequisite_is_implemented():
    assert RecordingImageModel().get_supported_modes() == [
        "image",
        "frame",
        "all_frames",
        "slice",
        "volume",
    ]
    assert RecordingSliceModel().get_supported_modes() == ["slice", "volume"]
    assert MeanClassifier().get_supported_modes() == ["default"]


def test_decorated_handler_gets_its_params_as_keyword_arguments():
    model = DecoratedModel()
    ((annotation,),) = model.predict(
        [volume(4)], params={"mode": "slice", "slice_index": 2, "axis": "sagittal"}
    )
    assert annotation.value == "sagittal-2"


def test_decorated_handler_uses_its_own_default_for_an_optional_param():
    ((annotation,),) = DecoratedModel().predict(
        [volume(4)], params={"mode": "slice", "slice_index": 1}
    )
    assert annotation.value == "axial-1"


def test_decorated_handler_takes_precedence_over_a_convention_name():
    class Both(BaseDatamintModel):
        @prediction_mode("image")
        def decorated(self, model_input):
            return [[CategoryAnnotation("by", "decorator")] for _ in model_input]

        def predict_image(self, model_input, **kwargs):
            return [[CategoryAnnotation("by", "name")] for _ in model_input]

    ((annotation,),) = Both().predict([ImageResource(np.zeros((2, 2)))])
    assert annotation.value == "decorator"


def test_two_handlers_for_one_mode_are_refused_with_both_names():
    class Twice(BaseDatamintModel):
        @prediction_mode("image")
        def first(self, model_input):
            return []

        @prediction_mode("image")
        def second(self, model_input):
            return []

    with pytest.raises(TypeError, match=r"two handlers for mode 'image': first\(\) and second\(\)"):
        Twice().get_supported_modes()


def test_reserved_params_never_reach_a_handler():
    seen = {}

    class Spy(BaseDatamintModel):
        def predict_default(self, model_input, **kwargs):
            seen.update(kwargs)
            return [[] for _ in model_input]

    Spy().predict(
        [ImageResource(np.zeros((2, 2)))],
        params={"mode": "default", "confidence_threshold": 0.3, "extra": 1},
    )
    assert seen == {"extra": 1}


def test_default_mode_resolves_to_image_for_images_and_volume_for_volumes():
    model = RecordingImageModel()
    ((on_image,),) = model.predict([ImageResource(np.ones((4, 4)))])
    ((on_volume,),) = model.predict([volume(3)])
    assert on_image.scope is AnnotationScope.IMAGE
    assert on_volume.scope is AnnotationScope.VOLUME and on_volume.mask.shape == (3, 16, 16)


def test_default_mode_uses_predict_default_for_mixed_inputs():
    model = DecoratedModel()
    result = model.predict([ImageResource(np.ones((4, 4))), volume(2)])
    assert [[a.value for a in entry] for entry in result] == [["whole"], ["whole"]]


def test_unsupported_mode_falls_back_to_predict_default():
    ((annotation,),) = MeanClassifier().predict(
        [ImageResource(np.ones((4, 4)))], params={"mode": "slice_range", "start_index": 0}
    )
    assert annotation.value == "bright"


def test_handler_raising_not_implemented_falls_back_to_default_unless_it_opts_out():
    class Partial(BaseDatamintModel):
        @prediction_mode("image")
        def only_small(self, model_input):
            raise NotImplementedError("too big")

        @prediction_mode("frame", param_keys=("frame_index",), fallback_to_default=False)
        def strict(self, model_input, *, frame_index):
            raise NotImplementedError("no frames today")

        def predict_default(self, model_input, **kwargs):
            return [[CategoryAnnotation("by", "default")] for _ in model_input]

    model = Partial()
    ((annotation,),) = model.predict([ImageResource(np.ones((4, 4)))], params={"mode": "image"})
    assert annotation.value == "default"
    video = VideoResource(np.ones((2, 4, 4)))
    with pytest.raises(NotImplementedError, match="no frames today"):
        model.predict([video], params={"mode": "frame", "frame_index": 0})


def test_unsupported_mode_without_default_lists_the_supported_modes():
    with pytest.raises(
        NotImplementedError, match=r"mode 'frame'.*supported modes: \['slice', 'volume'\]"
    ):
        RecordingSliceModel().predict([volume(2)], params={"mode": "frame", "frame_index": 0})


def test_unknown_mode_string_lists_the_valid_modes():
    with pytest.raises(ValueError, match=r"Unknown prediction mode 'slices'.*'slice'.*'volume'"):
        RecordingImageModel().predict([volume(2)], params={"mode": "slices"})


def test_slice_mode_without_slice_index_names_the_missing_parameter():
    with pytest.raises(
        ValueError, match=r"mode 'slice' needs the parameter\(s\) \['slice_index'\]"
    ):
        RecordingImageModel().predict([volume(2)], params={"mode": "slice"})
    with pytest.raises(ValueError, match=r"\['x', 'y'\]"):
        DecoratedModel().predict([volume(2)], params={"mode": "interactive"})


def test_a_param_the_handler_does_not_take_is_named():
    with pytest.raises(ValueError, match=r"does not take the parameter\(s\) \['slice_idx'\]"):
        DecoratedModel().predict(
            [volume(2)], params={"mode": "slice", "slice_index": 0, "slice_idx": 1}
        )


def test_slice_index_outside_the_volume_says_the_valid_range():
    with pytest.raises(ValueError, match="from 0 to 1"):
        RecordingImageModel().predict([volume(2)], params={"mode": "slice", "slice_index": 7})


def test_slice_mode_on_an_image_says_it_needs_a_volume():
    with pytest.raises(ValueError, match="needs volume resources.*is of kind 'image'"):
        RecordingImageModel().predict(
            [ImageResource(np.ones((2, 2)))], params={"mode": "slice", "slice_index": 0}
        )


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ([], r"returned 0 entries for 2 input\(s\)"),
        ([[], [], []], r"returned 3 entries for 2 input\(s\)"),
        (None, r"returned a NoneType"),
        ([[], ["not an annotation"]], r"entry #1 is not a list of Annotation"),
    ],
)
def test_a_result_of_the_wrong_shape_is_refused(result, message):
    class Wrong(BaseDatamintModel):
        def predict_default(self, model_input, **kwargs):
            return result

    with pytest.raises(ValueError, match=message):
        Wrong().predict([ImageResource(np.ones((2, 2))), ImageResource(np.ones((2, 2)))])


def test_confidence_threshold_drops_annotations_below_it_and_keeps_those_without_one():
    class Mixed(BaseDatamintModel):
        def predict_default(self, model_input, **kwargs):
            return [
                [
                    CategoryAnnotation("a", "x", confidence=0.2),
                    CategoryAnnotation("b", "x", confidence=0.8),
                    CategoryAnnotation("c", "x"),
                ]
                for _ in model_input
            ]

    (kept,) = Mixed().predict(
        [ImageResource(np.ones((2, 2)))], params={"confidence_threshold": 0.5}
    )
    assert [a.identifier for a in kept] == ["b", "c"]


@pytest.mark.parametrize("threshold", [1.5, -0.1, "high", True])
def test_a_bad_confidence_threshold_is_refused_before_the_model_runs(threshold):
    model = RecordingImageModel()
    with pytest.raises(ValueError, match="accepted: a number from 0 to 1"):
        model.predict([ImageResource(np.ones((2, 2)))], params={"confidence_threshold": threshold})
    assert model.calls == []


def test_delegation_adds_another_objects_handlers_without_overriding_existing_ones():
    class Inner:
        def predict_image(self, model_input, **kwargs):
            return [[CategoryAnnotation("from", "inner")] for _ in model_input]

        def predict_frame(self, model_input, frame_index, **kwargs):
            return [[CategoryAnnotation("from", f"inner-frame-{frame_index}")] for _ in model_input]

    outer = MeanClassifier()
    outer.router.update_registry(Inner())
    assert outer.get_supported_modes() == [
        "default",
        "image",
        "frame",
        "all_frames",
        "slice",
        "volume",
    ]
    ((annotation,),) = outer.predict(
        [VideoResource(np.ones((3, 2, 2)))], params={"mode": "frame", "frame_index": 2}
    )
    assert annotation.value == "inner-frame-2"

    router = PredictionRouter(RecordingImageModel(), BaseDatamintModel)
    router.update_registry(Inner())
    handler, _ = router._handlers[PredictionMode.IMAGE]
    assert handler.__self__.__class__ is RecordingImageModel
    router.update_registry(Inner(), overwrite=True)
    handler, _ = router._handlers[PredictionMode.IMAGE]
    assert handler.__self__.__class__ is Inner


def test_a_plain_object_is_wrapped_and_its_decorated_and_named_handlers_serve():
    model = WrappedModel(PlainObjectModel())
    assert model.get_supported_modes() == ["default", "frame"]
    assert model.task_type.value == "image_classification"
    ((annotation,),) = model.predict(
        [VideoResource(np.ones((2, 2, 2)))], params={"mode": "frame", "frame_index": 1}
    )
    assert annotation.value == "frame-1"


def test_an_object_with_no_handlers_cannot_be_wrapped():
    with pytest.raises(TypeError, match="has no prediction handlers"):
        WrappedModel(object())


def test_overriding_predict_is_refused_at_class_definition():
    with pytest.raises(TypeError, match=r"overrides predict\(\).*implement predict_default"):

        class Rogue(BaseDatamintModel):
            def predict(self, model_input, params=None):
                return []


def test_mode_spec_refuses_reserved_param_names_and_a_bare_string():
    with pytest.raises(ValueError, match="reserved"):
        ModeSpec(PredictionMode.SLICE, ("mode",))
    with pytest.raises(TypeError, match=r"write param_keys=\('slice_index',\)"):
        prediction_mode("slice", param_keys="slice_index")


def test_calling_a_bridged_stub_directly_routes_like_predict():
    model = RecordingImageModel()
    ((annotation,),) = model.predict_slice([volume(4)], slice_index=2)
    assert annotation.slice_index == 2


def test_router_is_rebuilt_after_pickling_and_the_device_is_not_kept(monkeypatch):
    import pickle

    model = ThresholdSegmenter()
    model._inference_device = "cuda:3"
    assert model.get_supported_modes()
    clone = pickle.loads(pickle.dumps(model))
    assert clone._router is None and clone._inference_device is None
    assert clone.get_supported_modes() == model.get_supported_modes()
    ((annotation,),) = clone.predict([volume(3)], params={"mode": "volume"})
    assert annotation.mask.shape == (3, 16, 16)


def test_inference_device_prefers_config_then_environment_then_cpu(monkeypatch):
    from mlflow.pyfunc import PythonModelContext

    monkeypatch.delenv("MLFLOW_DEFAULT_PREDICTION_DEVICE", raising=False)
    model = ThresholdSegmenter()
    assert model.inference_device == "cpu"
    monkeypatch.setenv("MLFLOW_DEFAULT_PREDICTION_DEVICE", "cuda:1")
    assert model.inference_device == "cuda:1"
    model.load_context(PythonModelContext(artifacts={}, model_config={"device": "cuda:7"}))
    assert model.inference_device == "cuda:7"


def test_need_gpu_model_on_cpu_warns_instead_of_failing(monkeypatch):
    from mlflow.pyfunc import PythonModelContext

    monkeypatch.delenv("MLFLOW_DEFAULT_PREDICTION_DEVICE", raising=False)
    model = ThresholdSegmenter(settings={"need_gpu": True})
    with pytest.warns(UserWarning, match="need_gpu=True but runs on the CPU"):
        model.load_context(PythonModelContext(artifacts={}, model_config=None))
    assert model.inference_device == "cpu"


def test_unknown_settings_key_is_refused_by_the_model():
    with pytest.raises(ValueError, match=r"Unknown ModelSettings key\(s\): 'needs_gpu'"):
        ThresholdSegmenter(settings={"needs_gpu": True})
