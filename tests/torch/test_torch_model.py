"""DatamintModel with torch modules: weights beside the pickle, devices, linked pytorch models."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException
from torch import nn

import datamint_core
from datamint_core import (
    ImageResource,
    LinkedModelError,
    VideoResource,
    VolumeResource,
    load_model,
    log_model,
    save_model,
    validate_model,
)
from datamint_torch import DatamintModel, as_tensor, detect_device, resolve_device
from tests.torch.cnn_models import (
    CnnSegmenter,
    MeanScorer,
    NetWithHandlers,
    TinyUNet,
    WrapperWithOwnDefault,
    phantom_slices,
    trained_segmenter,
)

CODE_MODEL = Path(__file__).parent / "code_models" / "cnn_model.py"


def masks_of(model, volume: VolumeResource) -> list[list[dict]]:
    return [
        [a.to_dict() for a in entry] for entry in model.predict([volume], params={"mode": "volume"})
    ]


def test_cnn_is_registered_and_a_new_process_predicts_the_same_masks(
    sqlite_tracking_uri, run_python, tmp_path
):
    model = trained_segmenter()
    volume = VolumeResource(phantom_slices())
    expected = masks_of(model, volume)
    np.save(tmp_path / "volume.npy", volume.pixels)
    with mlflow.start_run():
        info = log_model(model, name="cnn", registered_model_name="cnn-segmenter")

    out = run_python(
        """
        import json
        from datamint_core import VolumeResource, load_model
        model = load_model("models:/cnn-segmenter/1")
        volume = VolumeResource(path="volume.npy")
        print(json.dumps([[a.to_dict() for a in e]
                          for e in model.predict([volume], params={"mode": "volume"})]))
        """,
        env={"MLFLOW_TRACKING_URI": sqlite_tracking_uri},
    )
    assert json.loads(out.splitlines()[-1]) == expected
    assert expected[0][0]["scope"] == "volume"
    assert info.registered_model_version == 1


def test_weights_live_in_their_own_artifact_and_the_pickle_stays_small(tmp_path):
    big = CnnSegmenter(torch_model=TinyUNet(width=64))
    save_model(big, tmp_path / "m")

    pickle_size = (tmp_path / "m" / "python_model.pkl").stat().st_size
    weights = tmp_path / "m" / "artifacts" / "torch_weights" / "torch_model.pt"
    weights_size = weights.stat().st_size
    print(f"python_model.pkl: {pickle_size} bytes, torch_model.pt: {weights_size} bytes")
    assert weights_size > 140_000  # ~37k float32 parameters
    assert pickle_size < weights_size / 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU to save CUDA weights")
def test_a_model_saved_on_cuda_loads_and_predicts_on_a_machine_without_cuda(tmp_path,
                                                                             run_python):
    model = trained_segmenter()
    model.torch_model.to("cuda")
    model._inference_device = "cuda"
    volume = VolumeResource(phantom_slices())
    expected = masks_of(model, volume)
    save_model(model, tmp_path / "m")
    np.save(tmp_path / "volume.npy", volume.pixels)
    state = torch.load(tmp_path / "m" / "artifacts" / "torch_weights" / "torch_model.pt",
                       weights_only=True)
    assert all(t.device.type == "cpu" for t in state.values())

    out = run_python(
        """
        import json
        from datamint_core import VolumeResource, load_model
        model = load_model("m")
        print(model.inference_device)
        print(json.dumps([[a.to_dict() for a in e] for e in model.predict(
            [VolumeResource(path="volume.npy")], params={"mode": "volume"})]))
        """,
        env={"CUDA_VISIBLE_DEVICES": ""},
    )
    assert out.splitlines()[-2] == "cpu"
    assert json.loads(out.splitlines()[-1]) == expected


def test_requirements_name_the_torch_extra_and_the_torch_version(tmp_path):
    save_model(trained_segmenter(), tmp_path / "m")
    requirements = (tmp_path / "m" / "requirements.txt").read_text().split()
    assert requirements[0] == (
        f"./wheels/datamint-{datamint_core.__version__}-py3-none-any.whl[torch]"
    )
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements


def test_model_from_code_with_a_cnn_loads_with_pickle_deserialization_disabled(
    tmp_path, run_python
):
    trained = trained_segmenter(seed=5)
    volume = VolumeResource(phantom_slices())
    expected = masks_of(trained, volume)
    np.save(tmp_path / "volume.npy", volume.pixels)
    save_model(python_model=str(CODE_MODEL), path=tmp_path / "code", weights_from=trained)
    assert not (tmp_path / "code" / "python_model.pkl").exists()

    out = run_python(
        """
        import json
        from datamint_core import VolumeResource, load_model
        model = load_model("code")
        volume = VolumeResource(path="volume.npy")
        print(json.dumps([[a.to_dict() for a in e]
                          for e in model.predict([volume], params={"mode": "volume"})]))
        """,
        env={"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"},
    )
    assert json.loads(out.splitlines()[-1]) == expected


def test_weights_from_a_model_of_another_class_are_refused(tmp_path):
    with pytest.raises(MlflowException, match="weights_from is a WrapperWithOwnDefault"):
        save_model(
            python_model=str(CODE_MODEL), path=tmp_path / "m", weights_from=WrapperWithOwnDefault()
        )


def test_loaded_modules_are_in_eval_mode_on_the_inference_device(tmp_path):
    model = trained_segmenter()
    model.torch_model.train()
    save_model(model, tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"), device="cpu")
    assert loaded.inference_device == "cpu"
    assert not loaded.torch_model.training
    assert {p.device.type for p in loaded.torch_model.parameters()} == {"cpu"}
    assert loaded.get_mlflow_torch_models() == {"torch_model": loaded.torch_model}


def test_modules_in_attributes_and_containers_are_saved_and_restored(tmp_path):
    class Multi(DatamintModel):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(4, 4)
            self.heads = [nn.Linear(4, 2), nn.Linear(4, 3)]
            self.extra = {"refiner": nn.Linear(2, 2)}

        def predict_default(self, model_input, **kwargs):
            return [[] for _ in model_input]

    model = Multi()
    assert sorted(model.torch_modules()) == ["encoder", "extra.refiner", "heads.0", "heads.1"]
    save_model(model, tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    assert torch.equal(loaded.heads[1].weight, model.heads[1].weight)
    assert torch.equal(loaded.extra["refiner"].bias, model.extra["refiner"].bias)


def test_missing_weights_are_reported_as_an_incomplete_model_directory(tmp_path):
    save_model(trained_segmenter(), tmp_path / "m")
    (tmp_path / "m" / "artifacts" / "torch_weights" / "torch_model.pt").unlink()
    with pytest.raises(MlflowException, match="weights of torch module 'torch_model' are missing"):
        load_model(str(tmp_path / "m"))


def test_device_from_config_beats_the_environment_which_beats_hardware(tmp_path, monkeypatch):
    save_model(trained_segmenter(), tmp_path / "m")
    monkeypatch.delenv("MLFLOW_DEFAULT_PREDICTION_DEVICE", raising=False)
    hardware = "cuda" if torch.cuda.is_available() else "cpu"
    assert load_model(str(tmp_path / "m")).inference_device == detect_device() == hardware

    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU, if any
    monkeypatch.setenv("MLFLOW_DEFAULT_PREDICTION_DEVICE", missing)
    with pytest.warns(UserWarning, match=f"'{missing}' was asked for but is not available"):
        assert load_model(str(tmp_path / "m")).inference_device == "cpu"

    # 'meta' exists on every machine, so it shows the config winning over the environment.
    model = CnnSegmenter(torch_model=TinyUNet())
    model.load_context(mlflow.pyfunc.PythonModelContext({}, {"device": "meta"}))
    assert model.inference_device == "meta"
    assert next(model.torch_model.parameters()).is_meta


def test_a_need_gpu_model_loads_on_this_cpu_machine_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_DEFAULT_PREDICTION_DEVICE", raising=False)
    model = trained_segmenter()
    model._settings = type(model.settings)(need_gpu=True)
    save_model(model, tmp_path / "m")
    with pytest.warns(UserWarning, match="need_gpu=True but runs on the CPU"):
        loaded = load_model(str(tmp_path / "m"))
    assert loaded.predict([ImageResource(phantom_slices()[0])])[0][0].mask.shape == (32, 32)


def test_an_unknown_device_name_is_refused_with_examples():
    with pytest.raises(ValueError, match="Unknown inference device 'gpu0'; use e.g. 'cpu'"):
        resolve_device("gpu0")


def test_torch_model_that_is_not_a_module_is_refused():
    with pytest.raises(TypeError, match="torch_model must be a torch.nn.Module, got function"):
        CnnSegmenter(torch_model=lambda x: x)


def test_module_handlers_join_the_router_without_replacing_the_wrappers_own():
    model = WrapperWithOwnDefault(torch_model=NetWithHandlers())
    assert model.get_supported_modes() == ["default", "frame"]
    ((own,),) = model.predict([ImageResource(np.ones((2, 2)))])
    assert own.value == "wrapper-default"
    ((frame,),) = model.predict(
        [VideoResource(np.ones((3, 2, 2)))], params={"mode": "frame", "frame_index": 2}
    )
    assert frame.value == "module-frame-2"


def test_prediction_runs_in_inference_mode():
    seen = {}

    class Spy(DatamintModel):
        def predict_default(self, model_input, **kwargs):
            seen["inference"] = torch.is_inference_mode_enabled()
            return [[] for _ in model_input]

    Spy().predict([ImageResource(np.ones((2, 2)))])
    assert seen == {"inference": True}


def test_as_tensor_shares_memory_with_volume_slices_of_any_axis():
    volume = VolumeResource(phantom_slices())
    for axis in ("axial", "coronal", "sagittal"):
        view = volume.get_slice(3, axis)
        tensor = as_tensor(view)
        assert tensor.data_ptr() == view.pixels.__array_interface__["data"][0]
        assert np.shares_memory(tensor.numpy(), volume.pixels)
    assert as_tensor(np.arange(4, dtype=np.uint16)).dtype == torch.int32


def test_linked_pytorch_model_loads_on_the_device_in_eval_mode_and_bundles(
    sqlite_tracking_uri, tmp_path, monkeypatch
):
    monkeypatch.setenv("DATAMINT_CACHE_DIR", str(tmp_path / "cache"))
    net = TinyUNet().eval()
    with mlflow.start_run():
        mlflow.pytorch.log_model(
            net,
            name="net",
            registered_model_name="tiny-unet",
            pip_requirements=["torch"],
            input_example=np.zeros((1, 1, 32, 32), dtype=np.float32),
        )
        mlflow.pytorch.log_model(
            TinyUNet().train(),
            name="pickled",
            serialization_format="pickle",
            registered_model_name="tiny-unet-pickled",
            pip_requirements=["torch"],
        )
        log_model(trained_segmenter(), name="seg", registered_model_name="not-pytorch")

    class UsesLinked(DatamintModel):
        def predict_default(self, model_input, **kwargs):
            linked = self.get_mlflow_torch_models()["unet"]
            batch = torch.stack([as_tensor(r, dtype=torch.float32) for r in model_input])
            return [[] for _ in linked(batch[:, None])]

    parent = UsesLinked(mlflow_torch_models_uri={"unet": "models:/tiny-unet/1"})
    save_model(parent, tmp_path / "parent", bundle_linked_models=True)
    assert (tmp_path / "parent" / "artifacts" / "linked_models" / "unet" / "MLmodel").is_file()
    # The bundle alone must do: no registry, and an empty cache.
    closed = f"sqlite:///{tmp_path / 'no-such-dir' / 'gone.db'}"
    monkeypatch.setenv("DATAMINT_CACHE_DIR", str(tmp_path / "empty-cache"))
    mlflow.set_registry_uri(closed)
    try:
        loaded = load_model(str(tmp_path / "parent"))
    finally:
        mlflow.set_registry_uri(sqlite_tracking_uri)
    assert not (tmp_path / "empty-cache" / "stores").exists()
    unet = loaded.get_mlflow_torch_models()["unet"]
    assert isinstance(unet, nn.Module)
    batch = torch.from_numpy(phantom_slices()[:1, None])
    assert torch.allclose(unet(batch), net(batch), atol=1e-6)

    pickled = UsesLinked(mlflow_torch_models_uri={"unet": "models:/tiny-unet-pickled/1"})
    save_model(pickled, tmp_path / "pickled-parent")
    module = load_model(str(tmp_path / "pickled-parent")).get_mlflow_torch_models()["unet"]
    assert not module.training
    assert {p.device.type for p in module.parameters()} == {"cpu"}
    assert loaded.predict([ImageResource(phantom_slices()[0])]) == [[]]

    wrong = UsesLinked(mlflow_torch_models_uri={"unet": "models:/not-pytorch/1"})
    with pytest.raises(
        LinkedModelError,
        match=r"'unet' \('models:/not-pytorch/1'\) is not a "
        r"pytorch model: its flavors are \['datamint', "
        r"'python_function'\]",
    ):
        wrong.get_mlflow_torch_models()


def test_a_name_used_for_a_pyfunc_and_a_pytorch_link_is_refused():
    with pytest.raises(MlflowException, match=r"\['x'\] are given both"):
        CnnSegmenter(
            mlflow_models_uri={"x": "models:/a/1"}, mlflow_torch_models_uri={"x": "models:/b/1"}
        )


def test_importing_the_extra_imports_torch(run_python):
    out = run_python("import sys, datamint_torch; print('torch' in sys.modules)")
    assert out.strip() == "True"


def test_non_persistent_buffers_and_tied_weights_survive_save_and_load(tmp_path):
    class WithBuffers(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(3, 3, bias=False)
            self.out = nn.Linear(3, 3, bias=False)
            self.out.weight = self.embed.weight  # tied
            self.register_buffer("scale", torch.tensor([7.0, 7.0, 7.0]), persistent=False)

    class Holder(DatamintModel):
        def predict_default(self, model_input, **kwargs):
            return [[] for _ in model_input]

    save_model(Holder(torch_model=WithBuffers()), tmp_path / "m")
    loaded = load_model(str(tmp_path / "m")).torch_model
    assert torch.equal(loaded.scale, torch.tensor([7.0, 7.0, 7.0]))
    assert loaded.out.weight is loaded.embed.weight
    assert not loaded.embed.weight.is_meta


def test_a_code_model_whose_weights_file_is_missing_is_an_incomplete_model(tmp_path):
    save_model(
        python_model=str(CODE_MODEL), path=tmp_path / "code", weights_from=trained_segmenter()
    )
    (tmp_path / "code" / "artifacts" / "torch_weights" / "torch_model.pt").unlink()
    with pytest.raises(MlflowException, match="weights of torch module 'torch_model' are missing"):
        load_model(str(tmp_path / "code"))


def test_batchnorm_in_train_mode_is_validated_and_saved_as_it_serves_after_load(tmp_path):
    torch.manual_seed(3)
    net = TinyUNet()
    with torch.no_grad():  # running statistics far from any one image's batch statistics
        net.encode[1].running_mean.fill_(0.7)
        net.encode[1].running_var.fill_(3.0)
    model = MeanScorer(torch_model=net.train())
    image = ImageResource(np.random.default_rng(1).normal(size=(24, 24)).astype(np.float32))

    def score(m) -> float:
        return m.predict([image])[0][0].value

    train_mode_score = score(model)
    report = validate_model(model, [image])
    validated = score(model)
    assert report.ok and not net.training
    assert validated != pytest.approx(train_mode_score)  # the check is not vacuous

    net.train()
    save_model(model, tmp_path / "m")
    assert not net.training
    assert score(load_model(str(tmp_path / "m"))) == pytest.approx(validated, abs=1e-6)
    assert score(model) == pytest.approx(validated, abs=1e-6)
