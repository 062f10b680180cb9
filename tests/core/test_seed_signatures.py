"""``save_model`` / ``log_model`` called as seed 001 (``datamint.mlflow``) documents them."""

from __future__ import annotations

import inspect

import mlflow
import pytest
import yaml

from datamint_core import (
    AnnotationSpec,
    AnnotationType,
    VolumeResource,
    load_model,
    log_model,
    save_model,
)
from tests.core.sample_models import ThresholdSegmenter, phantom_volume

#: The positional parameters of seed 001's ``save_model`` and ``log_model``, in its order.
SEED_SAVE_MODEL = [
    "datamint_model", "path", "task_type", "supported_modes", "data_path", "code_paths",
    "infer_code_paths", "conda_env", "mlflow_model", "artifacts", "signature", "input_example",
    "pip_requirements", "extra_pip_requirements", "metadata", "model_config", "streamable",
]
SEED_LOG_MODEL = [
    "datamint_model", "task_type", "supported_modes", "name", "data_path", "code_paths",
    "infer_code_paths", "artifacts", "registered_model_name", "signature", "input_example",
    "pip_requirements", "extra_pip_requirements", "metadata", "model_config",
]


@pytest.mark.parametrize("function, seed", [(save_model, SEED_SAVE_MODEL),
                                            (log_model, SEED_LOG_MODEL)])
def test_save_and_log_model_take_the_seeds_positional_order_and_the_rest_only_by_keyword(
    function, seed
):
    parameters = inspect.signature(function).parameters.values()
    positional = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    added = [p for p in parameters if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.VAR_KEYWORD)]
    assert positional == seed
    assert all(p.kind is p.KEYWORD_ONLY for p in added)
    assert {"bundle_linked_models", "weights_from"} <= {p.name for p in added}


def test_a_positional_seed_order_save_model_call_saves_every_argument_and_loads(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("thresholds from the study protocol")
    notes = tmp_path / "notes.txt"
    notes.write_text("reviewed")
    model = ThresholdSegmenter(threshold=0.6)
    path = tmp_path / "m"

    save_model(
        model,                                  # datamint_model
        path,                                   # path
        "volume_segmentation",                  # task_type
        ["slice", "volume"],                    # supported_modes
        str(data),                              # data_path
        None,                                   # code_paths
        False,                                  # infer_code_paths
        None,                                   # conda_env
        None,                                   # mlflow_model
        {"notes": str(notes)},                  # artifacts
        None,                                   # signature
        None,                                   # input_example
        None,                                   # pip_requirements
        ["seed-order-extra==1.0"],              # extra_pip_requirements
        {"origin": "seed order"},               # metadata
        {"review": "done"},                     # model_config
        False,                                  # streamable
    )

    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    assert mlmodel["metadata"] == {"origin": "seed order"}
    assert mlmodel["flavors"]["datamint"]["task_type"] == "volume_segmentation"
    assert mlmodel["flavors"]["datamint"]["supported_modes"] == ["slice", "volume"]
    assert mlmodel["flavors"]["python_function"]["streamable"] is False
    assert (path / "artifacts" / "data.txt").read_text() == data.read_text()
    assert (path / "artifacts" / "notes.txt").read_text() == "reviewed"
    assert "seed-order-extra==1.0" in (path / "requirements.txt").read_text().split()
    assert mlflow.pyfunc.load_model(str(path)).model_config["review"] == "done"

    volume = VolumeResource(phantom_volume(), id="phantom")
    loaded = load_model(str(path))
    expected = model.predict([volume], params={"mode": "volume"})
    assert loaded.predict([volume], params={"mode": "volume"}) == expected


def test_a_positional_seed_order_log_model_call_registers_a_model_that_loads(
    sqlite_tracking_uri,
):
    model = ThresholdSegmenter(threshold=0.6)
    with mlflow.start_run():
        info = log_model(
            model,                              # datamint_model
            "volume_segmentation",              # task_type
            ["volume"],                         # supported_modes
            "segmenter",                        # name
            None,                               # data_path
            None,                               # code_paths
            False,                              # infer_code_paths
            None,                               # artifacts
            "seed-order-segmenter",             # registered_model_name
            None,                               # signature
            None,                               # input_example
            None,                               # pip_requirements
            None,                               # extra_pip_requirements
            {"origin": "seed order"},           # metadata
            None,                               # model_config
        )

    assert info.registered_model_version == 1
    assert info.metadata == {"origin": "seed order"}
    flavors = mlflow.models.get_model_info("models:/seed-order-segmenter/1").flavors
    assert flavors["datamint"]["task_type"] == "volume_segmentation"
    assert flavors["datamint"]["supported_modes"] == ["volume"]
    loaded = load_model("models:/seed-order-segmenter/1")
    volume = VolumeResource(phantom_volume(), id="phantom")
    (annotations,) = loaded.predict([volume], params={"mode": "volume"})
    assert annotations == model.predict([volume], params={"mode": "volume"})[0]


def test_a_project_parameter_given_by_position_is_refused_not_taken_for_another(tmp_path):
    spec = AnnotationSpec("bright", AnnotationType.SEGMENTATION)
    with pytest.raises(TypeError, match="positional argument"):
        save_model(ThresholdSegmenter(), tmp_path / "m", *([None] * 15), [spec])
    assert not (tmp_path / "m").exists()
    with pytest.raises(TypeError, match="positional argument"):
        log_model(ThresholdSegmenter(), *([None] * 14), True)  # bundle_linked_models
