"""Saving, logging, registering and loading models with the ``datamint`` flavor."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException

import datamint_core
from datamint_core import (
    AnnotationSpec,
    AnnotationType,
    BaseDatamintModel,
    ImageResource,
    VolumeResource,
    load_model,
    log_model,
    save_model,
)
from tests.core.sample_models import (
    MeanClassifier,
    PlainObjectModel,
    ThresholdSegmenter,
    phantom_volume,
)

CODE_MODEL = Path(__file__).parent / "code_models" / "threshold_model.py"


@pytest.fixture
def volume() -> VolumeResource:
    return VolumeResource(phantom_volume(), id="phantom", spacing=(3.0, 0.5, 0.5))


def read_mlmodel(path: Path) -> dict:
    return yaml.safe_load((path / "MLmodel").read_text())


def test_saved_model_has_the_datamint_block_and_a_pyfunc_flavor_we_load(tmp_path):
    save_model(ThresholdSegmenter(settings={"need_gpu": False}), tmp_path / "m")

    flavors = read_mlmodel(tmp_path / "m")["flavors"]
    block = flavors["datamint"]
    assert block["datamint_version"] == datamint_core.__version__
    assert block["task_type"] == "volume_segmentation"
    assert block["supported_modes"] == ["image", "frame", "all_frames", "slice", "volume"]
    assert block["mode_params"]["slice"] == {
        "params": ["slice_index", "axis"],
        "required": ["slice_index"],
    }
    assert block["model_settings"] == {"need_gpu": False}
    assert block["linked_models"] == {}
    assert block["annotation_specs"] == [{"identifier": "bright", "type": "segmentation"}]
    assert block["model_class"] == "tests.core.sample_models.ThresholdSegmenter"
    assert flavors["python_function"]["loader_module"] == "datamint_core.flavor"


def test_load_model_returns_the_model_and_predicts_what_it_did_before_saving(tmp_path, volume):
    model = ThresholdSegmenter(threshold=0.6)
    expected = model.predict([volume], params={"mode": "volume"})
    save_model(model, tmp_path / "m")

    loaded = load_model(str(tmp_path / "m"))

    assert isinstance(loaded, ThresholdSegmenter) and loaded.threshold == 0.6
    assert loaded.predict([volume], params={"mode": "volume"}) == expected


def test_pyfunc_predict_takes_resource_records_and_params_and_returns_json_ready_dicts(
    tmp_path, volume
):
    model = ThresholdSegmenter()
    save_model(model, tmp_path / "m")
    pyfunc_model = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    records = pd.DataFrame([volume.to_dict()])

    result = pyfunc_model.predict(records, params={"mode": "slice", "slice_index": 6})

    json.dumps(result)
    expected = model.predict([volume], params={"mode": "slice", "slice_index": 6})
    assert result == [[a.to_dict() for a in entry] for entry in expected]
    assert result[0][0]["slice_index"] == 6
    assert "rle" in result[0][0]["mask"]


def test_pyfunc_predict_accepts_a_list_of_resource_dicts_in_volume_mode(tmp_path, volume):
    save_model(ThresholdSegmenter(), tmp_path / "m")
    result = mlflow.pyfunc.load_model(str(tmp_path / "m")).predict(
        [volume.to_dict()], params={"mode": "volume"}
    )
    (annotation,) = result[0]
    assert annotation["scope"] == "volume"
    assert annotation["spacing"] == [3.0, 0.5, 0.5]


def test_task_type_and_annotation_specs_given_at_save_time_are_restored_at_load(tmp_path):
    specs = [AnnotationSpec.category("brightness", ["bright", "dark"])]
    save_model(
        MeanClassifier(), tmp_path / "m", task_type="volume_classification", annotation_specs=specs
    )

    loaded = load_model(str(tmp_path / "m"))

    assert loaded.task_type.value == "volume_classification"
    assert list(loaded.annotation_specs) == specs
    assert MeanClassifier.task_type.value == "image_classification"  # the class is untouched


def test_an_object_with_handlers_is_wrapped_when_saved(tmp_path):
    save_model(PlainObjectModel(), tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.get_supported_modes() == ["default", "frame"]
    assert loaded.task_type.value == "image_classification"
    ((annotation,),) = loaded.predict([ImageResource(np.ones((2, 2)))])
    assert annotation.value == "anything"


def test_an_object_without_handlers_is_refused_at_save(tmp_path):
    with pytest.raises(MlflowException, match="has no prediction handlers"):
        save_model(object(), tmp_path / "m")


def test_supported_modes_must_be_modes_the_model_serves(tmp_path):
    save_model(ThresholdSegmenter(), tmp_path / "ok", supported_modes=["volume", "slice"])
    assert read_mlmodel(tmp_path / "ok")["flavors"]["datamint"]["supported_modes"] == [
        "volume",
        "slice",
    ]
    with pytest.raises(
        MlflowException,
        match=r"mode\(s\) \['frame_range'\] that "
        r"ThresholdSegmenter does not serve",
    ):
        save_model(ThresholdSegmenter(), tmp_path / "bad", supported_modes=["frame_range"])
    with pytest.raises(MlflowException, match="Unknown prediction mode 'volumes'"):
        save_model(ThresholdSegmenter(), tmp_path / "bad2", supported_modes=["volumes"])


def test_an_unknown_task_type_is_refused_with_the_valid_ones(tmp_path):
    with pytest.raises(
        MlflowException, match="Unknown task type 'segmentation'.*'image_segmentation'"
    ) as caught:
        save_model(ThresholdSegmenter(), tmp_path / "m", task_type="segmentation")
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"


@pytest.mark.both_envs  # torch installed beside it must not leak into the pins
def test_requirements_are_the_bundled_wheel_and_pinned_packages_without_torch(tmp_path):
    save_model(ThresholdSegmenter(), tmp_path / "m", extra_pip_requirements=["scipy>=1.10"])
    requirements = (tmp_path / "m" / "requirements.txt").read_text().split()
    wheel = f"datamint-{datamint_core.__version__}-py3-none-any.whl"
    assert requirements[0] == f"./wheels/{wheel}"
    assert (tmp_path / "m" / "wheels" / wheel).is_file()
    names = [r.split("==")[0].split(">=")[0] for r in requirements[1:]]
    assert names == ["mlflow-skinny", "numpy", "pandas", "cloudpickle", "scipy"]
    assert not any("torch" in r for r in requirements)


def test_giving_the_model_twice_or_not_at_all_is_refused(tmp_path):
    with pytest.raises(MlflowException, match="exactly once"):
        save_model(path=tmp_path / "m")
    with pytest.raises(MlflowException, match="exactly once"):
        save_model(ThresholdSegmenter(), tmp_path / "m", python_model=ThresholdSegmenter())


def test_a_python_model_path_that_is_not_a_py_file_is_refused(tmp_path):
    with pytest.raises(MlflowException, match=r"is not an existing \.py file"):
        save_model(python_model=str(tmp_path / "missing.py"), path=tmp_path / "m")


def test_a_code_file_that_sets_a_non_datamint_model_is_refused(tmp_path):
    code = tmp_path / "other.py"
    code.write_text(
        "import mlflow\n"
        "class Other(mlflow.pyfunc.PythonModel):\n"
        "    def predict(self, context, model_input, params=None):\n"
        "        return model_input\n"
        "mlflow.models.set_model(Other())\n"
    )
    with pytest.raises(MlflowException, match="set a Other as its model"):
        save_model(python_model=str(code), path=tmp_path / "m")


def test_loading_a_model_without_the_datamint_flavor_names_its_flavors(tmp_path):
    class Plain(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    mlflow.pyfunc.save_model(tmp_path / "plain", python_model=Plain(), pip_requirements=["mlflow"])
    with pytest.raises(
        MlflowException,
        match=r"no 'datamint' flavor \(flavors: "
        r"\['python_function'\]\)",
    ):
        load_model(str(tmp_path / "plain"))


def test_a_corrupted_model_directory_is_reported_as_such(tmp_path):
    save_model(ThresholdSegmenter(), tmp_path / "m")
    pickled = tmp_path / "m" / "python_model.pkl"
    pickled.write_bytes(pickled.read_bytes()[:40])
    with pytest.raises(MlflowException, match="incomplete or corrupted"):
        load_model(str(tmp_path / "m"))


def test_device_given_to_load_model_becomes_the_inference_device(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DEFAULT_PREDICTION_DEVICE", "cuda:1")
    save_model(ThresholdSegmenter(), tmp_path / "m")
    assert load_model(str(tmp_path / "m")).inference_device == "cuda:1"
    assert load_model(str(tmp_path / "m"), device="cpu").inference_device == "cpu"


def test_model_from_code_loads_and_predicts_with_pickle_deserialization_disabled(
    tmp_path, run_python
):
    save_model(python_model=str(CODE_MODEL), path=tmp_path / "code")
    save_model(ThresholdSegmenter(), tmp_path / "pickled")
    assert not (tmp_path / "code" / "python_model.pkl").exists()
    requirements = (tmp_path / "code" / "requirements.txt").read_text()
    assert "cloudpickle" not in requirements

    out = run_python(
        """
        import json, mlflow, numpy as np
        from datamint_core import VolumeResource, load_model
        from tests.core.sample_models import phantom_volume
        volume = VolumeResource(phantom_volume())
        model = load_model("code")
        (annotation,), = model.predict([volume], params={"mode": "volume"})
        pyfunc = mlflow.pyfunc.load_model("code").predict([volume.to_dict()],
                                                          params={"mode": "volume"})
        assert pyfunc == [[annotation.to_dict()]]
        print(json.dumps({"voxels": annotation.voxel_count, "cls": type(model).__name__}))
        try:
            load_model("pickled")
        except mlflow.exceptions.MlflowException as error:
            print("REFUSED:", error.message)
        """,
        env={"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"},
    )
    summary = json.loads(out.splitlines()[0])
    assert summary == {
        "voxels": int((phantom_volume() > 0.5).sum()),
        "cls": "CodeThresholdSegmenter",
    }
    assert "REFUSED: Deserializing model using pickle is disallowed" in out


def test_registry_round_trip_through_sqlite_in_a_new_process(
    sqlite_tracking_uri, run_python, tmp_path, volume
):
    model = ThresholdSegmenter()
    with mlflow.start_run():
        info = log_model(model, name="segmenter", registered_model_name="phantom-segmenter")
    assert info.registered_model_version == 1
    expected = [
        [a.to_dict() for a in entry] for entry in model.predict([volume], params={"mode": "volume"})
    ]
    np.save(tmp_path / "volume.npy", volume.pixels)

    out = run_python(
        """
        import json, mlflow
        from datamint_core import VolumeResource, load_model
        volume = VolumeResource(path="volume.npy", id="phantom", spacing=(3.0, 0.5, 0.5))
        native = load_model("models:/phantom-segmenter/1").predict(
            [volume], params={"mode": "volume"})
        pyfunc = mlflow.pyfunc.load_model("models:/phantom-segmenter/1").predict(
            [volume], params={"mode": "volume"})
        print(json.dumps({"native": [[a.to_dict() for a in e] for e in native],
                          "pyfunc": pyfunc}))
        """,
        env={"MLFLOW_TRACKING_URI": sqlite_tracking_uri},
    )
    result = json.loads(out.splitlines()[-1])
    assert result["native"] == result["pyfunc"] == expected


def test_log_model_without_registration_gives_a_loadable_runs_uri(sqlite_tracking_uri, volume):
    with mlflow.start_run():
        info = log_model(MeanClassifier(), name="classifier")
    assert info.registered_model_version is None
    loaded = load_model(info.model_uri)
    assert isinstance(loaded, BaseDatamintModel)
    assert loaded.predict([volume])[0][0].identifier == "brightness"


def test_annotation_specs_given_as_dicts_are_validated(tmp_path):
    with pytest.raises(MlflowException, match=r"type must be one of 'category'.*got 'blob'"):
        save_model(
            MeanClassifier(), tmp_path / "m", annotation_specs=[{"identifier": "x", "type": "blob"}]
        )
    save_model(
        MeanClassifier(),
        tmp_path / "ok",
        annotation_specs=[{"identifier": "x", "type": "category", "values": ["a"]}],
    )
    assert load_model(str(tmp_path / "ok")).annotation_specs == [
        AnnotationSpec("x", AnnotationType.CATEGORY, values=("a",))
    ]


def test_pyfunc_reads_a_local_path_from_resource_dicts_only_under_the_allowed_directories(
    tmp_path, monkeypatch, volume
):
    save_model(ThresholdSegmenter(), tmp_path / "m")
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "ct.npy", volume.pixels)
    request = [{"kind": "volume", "path": str(data / "ct.npy")}]
    pyfunc_model = mlflow.pyfunc.load_model(str(tmp_path / "m"))

    monkeypatch.delenv("DATAMINT_SERVE_ALLOW_PATH_DIRS", raising=False)
    with pytest.raises(MlflowException, match=r"names the local path .*ct\.npy.*--allow-path-dir"):
        pyfunc_model.predict(request, params={"mode": "volume"})
    with pytest.raises(MlflowException, match="outside"):
        pyfunc_model.predict(pd.DataFrame(request), params={"mode": "volume"})

    monkeypatch.setenv("DATAMINT_SERVE_ALLOW_PATH_DIRS", str(data))
    assert pyfunc_model.predict(request, params={"mode": "volume"})[0][0]["scope"] == "volume"
    # resource objects built by the caller are the caller's own files
    monkeypatch.delenv("DATAMINT_SERVE_ALLOW_PATH_DIRS")
    own = VolumeResource(path=str(data / "ct.npy"))
    assert pyfunc_model.predict([own], params={"mode": "volume"})[0][0]["scope"] == "volume"


def test_pyfunc_checks_the_path_of_a_single_resource_under_resources_too(tmp_path, monkeypatch):
    save_model(ThresholdSegmenter(), tmp_path / "m")
    pyfunc_model = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    monkeypatch.delenv("DATAMINT_SERVE_ALLOW_PATH_DIRS", raising=False)

    with pytest.raises(MlflowException, match=r"names the local path '/etc/ct\.npy'"):
        pyfunc_model.predict({"resources": {"kind": "volume", "path": "/etc/ct.npy"}})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"mode": "sideways"}, "Unknown prediction mode 'sideways'; valid values are: 'default'"),
        ({"mode": "slice", "slice_index": 0, "axis": "up"}, "Param 'axis'='up' is not valid"),
        ({"mode": "volume", "confidence_threshold": 3}, "confidence_threshold=3.0 is not valid"),
    ],
)
def test_pyfunc_turns_input_errors_into_invalid_parameter_value_with_the_library_message(
    tmp_path, volume, params, message
):
    save_model(ThresholdSegmenter(), tmp_path / "m")
    pyfunc_model = mlflow.pyfunc.load_model(str(tmp_path / "m"))

    with pytest.raises(MlflowException) as raised:
        pyfunc_model.predict([volume.to_dict()], params=params)

    assert raised.value.error_code == "INVALID_PARAMETER_VALUE"
    assert message in raised.value.message


def test_get_raw_model_gives_the_datamint_model_loaded_directly_or_as_a_linked_model(tmp_path):
    from tests.integration.linked_sample_models import Ensemble, ScaledMean

    save_model(ScaledMean(2.0), tmp_path / "child")
    save_model(Ensemble(mlflow_models_uri={"child": str(tmp_path / "child")}), tmp_path / "parent")

    direct = mlflow.pyfunc.load_model(str(tmp_path / "child")).get_raw_model()
    linked = load_model(str(tmp_path / "parent")).get_mlflow_models()["child"].get_raw_model()

    assert isinstance(direct, ScaledMean) and direct.factor == 2.0
    assert isinstance(linked, ScaledMean) and linked.factor == 2.0
