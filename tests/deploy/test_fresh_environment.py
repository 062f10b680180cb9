"""A saved model installs and predicts in a fresh environment built only from its own files."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import datamint_core
from datamint_core import ImageResource, save_model

pytestmark = pytest.mark.deploy

BLOB_MODEL = '''
from scipy import ndimage

from datamint_core import BaseDatamintModel, NumericAnnotation, TaskType


class BlobCounter(BaseDatamintModel):
    """Counts the bright connected regions of each image (scipy's labelling)."""

    task_type = TaskType.ANOMALY_DETECTION

    def predict_image(self, model_input, **kwargs):
        return [
            [NumericAnnotation("blobs", float(ndimage.label(r.pixels > 0.5)[1]))]
            for r in model_input
        ]
'''

CNN_MODEL = '''
import mlflow
import torch
from torch import nn

from datamint_core import NumericAnnotation, TaskType
from datamint_torch import DatamintModel, as_tensor


class MeanCnn(DatamintModel):
    task_type = TaskType.ANOMALY_DETECTION

    def predict_image(self, model_input, **kwargs):
        net = self.get_pytorch_model()
        batch = torch.stack([as_tensor(r, self.inference_device) for r in model_input])
        scores = net(batch[:, None].float()).mean(dim=(1, 2, 3))
        return [[NumericAnnotation("score", round(float(s), 5))] for s in scores]


torch.manual_seed(7)
mlflow.models.set_model(MeanCnn(torch_model=nn.Sequential(
    nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1))))
'''


def _image_request() -> tuple[ImageResource, dict]:
    image = np.zeros((16, 16))
    image[1:3, 1:3] = 1.0
    image[8:12, 9:14] = 1.0
    image[14, 0] = 1.0
    resource = ImageResource(image, id="three-blobs")
    return resource, {"inputs": [resource.to_dict()]}


def test_a_model_importing_scipy_installs_from_its_own_files_and_predicts(
    tmp_path, monkeypatch, predict_in_fresh_env
):
    pytest.importorskip("scipy", reason="the model under test imports scipy")
    source = tmp_path / "blob_model.py"
    source.write_text(BLOB_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    from blob_model import BlobCounter

    save_model(BlobCounter(), tmp_path / "model", code_paths=[str(source)])
    requirements = (tmp_path / "model" / "requirements.txt").read_text().split()
    assert requirements[0] == f"./wheels/datamint-{datamint_core.__version__}-py3-none-any.whl"
    assert any(r.startswith("scipy==") for r in requirements)

    _, request = _image_request()
    predictions = predict_in_fresh_env(tmp_path / "model", request)

    assert predictions == [
        [{"type": "numeric", "identifier": "blobs", "scope": "image", "value": 3.0}]
    ]
    installed = "\n".join(predict_in_fresh_env.installed)
    assert "datamint==" in installed and "wheels/datamint-" in installed  # the bundled build
    assert "scipy==" in installed


def test_a_torch_model_installs_the_cpu_torch_and_predicts_what_it_did_here(
    tmp_path, predict_in_fresh_env
):
    pytest.importorskip("torch", reason="the model under test holds a torch network")
    import torch

    code = tmp_path / "cnn_model.py"
    code.write_text(textwrap.dedent(CNN_MODEL))
    save_model(python_model=str(code), path=tmp_path / "model")
    requirements = (tmp_path / "model" / "requirements.txt").read_text().split()
    assert requirements[0].endswith("-py3-none-any.whl[torch]")
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    assert torch_pin in requirements
    resource, request = _image_request()
    expected = datamint_core.load_model(str(tmp_path / "model")).predict([resource])

    # The CPU build only (a local version label no index's CUDA build carries).
    predictions = predict_in_fresh_env(
        tmp_path / "model", request, constraints=[f"torch=={torch.__version__}"]
    )

    assert predictions == [[annotation.to_dict() for annotation in expected[0]]]
    installed = "\n".join(predict_in_fresh_env.installed)
    assert f"torch=={torch.__version__}" in installed
    assert "nvidia" not in installed
