"""The task and mode vocabulary, and the deployment settings saved with a model."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from datamint_core import ModelSettings, PredictionMode, TaskType

SEED_TASK_TYPES = {
    "anomaly_detection",
    "image_classification",
    "image_segmentation",
    "instance_segmentation",
    "landmark_detection",
    "multilabel_image_classification",
    "object_detection",
    "report_generation",
    "video_frame_classification",
    "video_segmentation",
    "volume_classification",
    "volume_segmentation",
}

SEED_PREDICTION_MODES = {
    "all_frames",
    "default",
    "few_shot",
    "frame",
    "frame_range",
    "image",
    "interactive",
    "primary_slice",
    "slice",
    "slice_range",
    "temporal_sequence",
    "volume",
}


# -- TaskType and PredictionMode -----------------------------------------------------------


def test_task_type_has_exactly_the_twelve_seed_values() -> None:
    assert len(TaskType) == 12
    assert {member.value for member in TaskType} == SEED_TASK_TYPES


def test_prediction_mode_has_exactly_the_twelve_seed_values() -> None:
    assert len(PredictionMode) == 12
    assert {member.value for member in PredictionMode} == SEED_PREDICTION_MODES


def test_every_member_is_named_after_its_value_in_capitals() -> None:
    assert all(member.name == member.value.upper() for member in TaskType)
    assert all(member.name == member.value.upper() for member in PredictionMode)


@pytest.mark.parametrize("member", [*TaskType, *PredictionMode], ids=lambda m: m.value)
def test_every_member_is_a_string_equal_to_its_value(member) -> None:
    assert isinstance(member, str)
    assert member == member.value


def test_members_compare_equal_to_their_strings() -> None:
    assert TaskType.IMAGE_SEGMENTATION == "image_segmentation"
    assert PredictionMode.SLICE_RANGE == "slice_range"
    assert "volume" in {PredictionMode.VOLUME}


def test_members_serialise_to_json_as_their_plain_values() -> None:
    metadata = {"task_type": TaskType.VOLUME_SEGMENTATION, "modes": list(PredictionMode)[:2]}

    assert json.loads(json.dumps(metadata)) == {
        "task_type": "volume_segmentation",
        "modes": ["default", "image"],
    }
    assert json.dumps(TaskType.IMAGE_SEGMENTATION) == '"image_segmentation"'


@pytest.mark.parametrize("enum_class", [TaskType, PredictionMode])
def test_parse_accepts_a_member_or_its_string(enum_class) -> None:
    for member in enum_class:
        assert enum_class.parse(member) is member
        assert enum_class.parse(member.value) is member


@pytest.mark.parametrize(
    ("enum_class", "what", "bad_value"),
    [
        (TaskType, "task type", "segmentation"),
        (TaskType, "task type", "IMAGE_SEGMENTATION"),
        (TaskType, "task type", None),
        (PredictionMode, "prediction mode", "volumetric"),
        (PredictionMode, "prediction mode", 3),
    ],
)
def test_parsing_an_unknown_value_lists_every_valid_value(enum_class, what, bad_value) -> None:
    valid = ", ".join(repr(member.value) for member in enum_class)

    with pytest.raises(
        ValueError, match=re.escape(f"Unknown {what} {bad_value!r}; valid values are: {valid}.")
    ) as raised:
        enum_class.parse(bad_value)
    assert all(repr(member.value) in str(raised.value) for member in enum_class)


def test_parse_error_hides_the_enum_internals() -> None:
    with pytest.raises(ValueError) as raised:
        TaskType.parse("segmentation")

    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


# -- ModelSettings -------------------------------------------------------------------------


def test_a_model_does_not_need_a_gpu_by_default() -> None:
    assert ModelSettings().need_gpu is False
    assert ModelSettings().to_dict() == {"need_gpu": False}


@pytest.mark.parametrize("need_gpu", [True, False])
def test_settings_round_trip_through_a_json_dict(need_gpu: bool) -> None:
    settings = ModelSettings(need_gpu=need_gpu)

    received = ModelSettings.from_dict(json.loads(json.dumps(settings.to_dict())))

    assert received == settings
    assert received.need_gpu is need_gpu


def test_from_dict_of_an_empty_dict_gives_the_defaults() -> None:
    assert ModelSettings.from_dict({}) == ModelSettings()


def test_unknown_settings_keys_are_rejected_naming_each_and_the_valid_keys() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Unknown ModelSettings key(s): 'cuda', 'gpu_count'; valid keys are: "
            "'max_batch_size', 'need_gpu', 'sliding_window'."
        ),
    ):
        ModelSettings.from_dict({"need_gpu": True, "gpu_count": 2, "cuda": True})


@pytest.mark.parametrize("need_gpu", ["true", 1, 0, None], ids=repr)
def test_need_gpu_must_be_a_real_bool(need_gpu) -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(f"ModelSettings.need_gpu must be True or False, got {need_gpu!r}."),
    ):
        ModelSettings(need_gpu=need_gpu)


def test_from_dict_rejects_a_non_bool_need_gpu_too() -> None:
    with pytest.raises(
        TypeError, match=re.escape("ModelSettings.need_gpu must be True or False, got 'yes'.")
    ):
        ModelSettings.from_dict({"need_gpu": "yes"})


def test_from_dict_rejects_something_that_is_not_a_dict() -> None:
    with pytest.raises(
        TypeError, match=re.escape("ModelSettings.from_dict expects a dict, got list.")
    ):
        ModelSettings.from_dict([("need_gpu", True)])


def test_settings_are_immutable() -> None:
    settings = ModelSettings()

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.need_gpu = True  # type: ignore[misc]


def test_coerce_returns_an_instance_unchanged() -> None:
    settings = ModelSettings(need_gpu=True)

    assert ModelSettings.coerce(settings) is settings


def test_coerce_reads_a_dict() -> None:
    assert ModelSettings.coerce({"need_gpu": True}) == ModelSettings(need_gpu=True)


def test_coerce_turns_none_into_the_defaults() -> None:
    assert ModelSettings.coerce(None) == ModelSettings()


def test_coerce_validates_the_keys_of_a_dict() -> None:
    with pytest.raises(ValueError, match=re.escape("Unknown ModelSettings key(s): 'gpu'")):
        ModelSettings.coerce({"gpu": True})


@pytest.mark.parametrize(
    ("settings", "type_name"), [("need_gpu", "str"), (True, "bool"), (["need_gpu"], "list")]
)
def test_coerce_rejects_anything_else_naming_what_it_accepts(settings, type_name: str) -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(f"settings must be a ModelSettings, a dict or None, got {type_name}."),
    ):
        ModelSettings.coerce(settings)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_max_batch_size_must_be_a_positive_integer(bad) -> None:
    with pytest.raises(ValueError, match="max_batch_size must be an integer >= 1"):
        ModelSettings(max_batch_size=bad)


def test_max_batch_size_round_trips_and_is_omitted_when_unset() -> None:
    assert ModelSettings(max_batch_size=8).to_dict()["max_batch_size"] == 8
    assert ModelSettings.from_dict({"max_batch_size": 8}) == ModelSettings(max_batch_size=8)
    assert "max_batch_size" not in ModelSettings().to_dict()
