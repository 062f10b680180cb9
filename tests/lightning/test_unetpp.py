"""UNetPPTrainer: the seed's usage example on a local Decathlon project, and its arguments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from datamint_lightning import UNetPPTrainer
from tests.seed_example import CHECKS, PREDICT, SEED_EXAMPLE, result_of
from tests.training_projects import LABELS, write_msd_project

REPO_ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("monai", reason="UNetPPTrainer needs the [train] extra (MONAI)")


def run_fresh(code: str, env: dict[str, str], cwd: Path) -> str:
    completed = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd,
                               capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed.stdout


def local_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "DATAMINT_"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT), HOME=str(tmp_path),
        DATAMINT_CONFIG_FILE=str(tmp_path / "no-config.json"),
        DATAMINT_CACHE_DIR=str(tmp_path / "cache"),
        DATAMINT_PROJECTS_DIR=str(tmp_path / "projects"),
        OMP_NUM_THREADS="1",  # a small network on a shared machine: threads only contend
    )
    return env


def test_the_seed_usage_example_runs_on_a_local_decathlon_project(tmp_path, monkeypatch):
    write_msd_project(tmp_path / "projects" / "Task03_Liver", cases=5, name="Liver Segmentation")
    env = local_env(tmp_path)
    stdout = run_fresh(SEED_EXAMPLE + CHECKS, env, tmp_path)
    found = result_of(stdout)

    # No tracking URI anywhere: the embedded SQLite store in the working directory.
    assert found["tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert not (tmp_path / "mlruns").exists() or not any((tmp_path / "mlruns").glob("*/meta.yaml"))
    results = found["results"]
    assert found["experiment_id"] == results["experiment_id"]
    assert found["run_ids"] == [results["run_id"]]
    assert found["version_run_id"] == results["run_id"]
    assert results["registered_model_name"] == "Liver Segmentation"
    assert results["registered_model_version"] == 1
    assert found["splits_equal"] is True
    test_results = results["test_results"]
    expected = {f"test_{metric}{suffix}" for metric in ("dice", "iou", "hd95", "assd", "nsd")
                for suffix in ("", *(f"/{name}" for name in LABELS))}
    assert set(test_results) == expected
    assert all(0.0 <= test_results[k] <= 1.0 for k in expected if "dice" in k
               and test_results[k] == test_results[k])  # nan: a label absent from the case
    (case,) = found["test_cases"]
    assert case["case_id"] == results["splits"]["test"][0]
    # The printed line is the dict itself.
    assert str(test_results) in stdout

    # The registered model loads from code (no pickle) and predicts image, slice and volume
    # on the source's grid.
    predicted = result_of(run_fresh(PREDICT, {**env, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION":
                                              "false"}, tmp_path))
    assert {"image", "slice", "volume"} <= set(predicted["modes"])
    for identifier, shape, scope, spacing, same_affine in predicted["volume"]:
        assert identifier in LABELS and shape == [8, 32, 32] and scope == "volume"
        assert spacing == pytest.approx(predicted["spacing"]) and same_affine is True
    assert all(shape == [32, 32] and index == 4 for _, shape, index in predicted["slice"])
    assert all(shape == [32, 32] for _, shape in predicted["image"])

    # The run holds what was promised: the splits as inputs, the checkpoint, test metrics.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", found["tracking_uri"])
    mlflow.set_tracking_uri(found["tracking_uri"])
    try:
        run = mlflow.get_run(results["run_id"])
        contexts = {t.value for i in run.inputs.dataset_inputs for t in i.tags
                    if t.key == "mlflow.data.context"}
        assert contexts == {"training", "validation", "test"}
        assert "train_loss" in run.data.metrics and "val_loss" in run.data.metrics
        artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(results["run_id"],
                                                                          "checkpoints")]
        assert artifacts == [f"checkpoints/{Path(results['best_checkpoint']).name}"]
    finally:
        mlflow.set_tracking_uri(None)


def test_a_gpu_accelerator_on_a_machine_without_one_fails_at_once_naming_the_fix(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(MisconfigurationException, match=r"no CUDA GPU.*accelerator='cpu'"):
        UNetPPTrainer(project=tmp_path / "not-read", accelerator="gpu")


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"image_size": 100}, ValueError, "multiple of 16 of at least 32"),
        ({"image_size": 16}, ValueError, r"image_size=16 .*such as 32 or 48"),
        ({"batch_size": 0}, ValueError, "batch_size=0"),
        ({"max_epochs": -1}, ValueError, "max_epochs=-1"),
        ({"accelerator": "tpu-pod"}, MisconfigurationException, "accelerator='tpu-pod'"),
        ({"features": (8, 8)}, ValueError, "six positive widths"),
        ({"datamodule": "data"}, TypeError, "takes a DatamintDataModule"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_read(tmp_path, arguments, error, message):
    with pytest.raises(error, match=message):
        UNetPPTrainer(project=tmp_path / "not-read", **arguments)


def _segmenter_finding_everywhere(label: int, channels: tuple[str, ...]):
    from datamint_torch.segmentation import UNetPPSegmenter

    segmenter = UNetPPSegmenter(label_names=LABELS, channel_names=channels, image_size=32,
                                features=(4, 4, 8, 8, 16, 4))
    segmenter.get_pytorch_model().eval()  # as a loaded model is
    last = [m for m in segmenter.get_pytorch_model().modules()
            if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.nn.functional.one_hot(torch.tensor(label), 3).float() * 10)
    return segmenter


def test_the_segmenter_serves_a_multi_channel_volume_through_its_slices_on_the_volume_grid():
    import numpy as np

    from datamint_core import VolumeResource

    segmenter = _segmenter_finding_everywhere(2, ("T2", "ADC"))
    affine = np.diag([2.5, 0.8, 0.8, 1.0])
    volume = VolumeResource(np.random.default_rng(0).normal(size=(3, 20, 24, 2)),
                            spacing=(2.5, 0.8, 0.8), affine=affine,
                            channel_names=("T2", "ADC"))
    (found,) = segmenter.predict([volume], params={"mode": "volume"})
    (mask,) = found
    assert mask.identifier == "tumour" and mask.mask.shape == (3, 20, 24) and mask.mask.all()
    assert mask.spacing == pytest.approx((2.5, 0.8, 0.8))
    np.testing.assert_array_equal(mask.affine, affine)
    assert mask.confidence == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match=r"\(H, W, 2\).*channels \['T2', 'ADC'\]"):
        segmenter.predict([VolumeResource(np.zeros((2, 8, 8)))], params={"mode": "volume"})
