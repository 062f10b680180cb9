"""Training from a Datamint platform project: ImageDataset over the platform's API, and the
seed's usage example against the platform stand-in in front of a real ``mlflow server``."""

from __future__ import annotations

import gzip
import importlib.util
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest

from tests.integration.mlflow_server import MlflowServer
from tests.integration.platform_standin import PlatformStandIn
from tests.integration.test_platform import datamint_env
from tests.seed_example import CHECKS, SEED_EXAMPLE, result_of
from tests.training_projects import LABELS, nifti_affine, phantom_case

# Its outcome depends on what the environment holds (torch, Lightning, the full mlflow).
pytestmark = pytest.mark.both_envs

# The training half needs Lightning (and torch), which the core environment does not hold.
needs_lightning = pytest.mark.skipif(
    importlib.util.find_spec("lightning") is None,
    reason="needs Lightning: runs in the full environment (pip install \".[train]\")",
)

PROJECT = {"id": "5d0c7a4e-2b1f-4f3a-9c8e-7a6b5c4d3e2f", "name": "Liver Segmentation"}
EMPTY_PROJECT = {"id": "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f", "name": "Not annotated"}
CASES = 5


def nifti_bytes(dhw: np.ndarray) -> bytes:
    import nibabel

    image = nibabel.Nifti1Image(np.ascontiguousarray(dhw.transpose(2, 1, 0)), nifti_affine())
    return gzip.compress(image.to_bytes())


def resource_id(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012d}"


@pytest.fixture(scope="module")
def platform(mlflow_server: MlflowServer) -> Iterator[PlatformStandIn]:
    standin = PlatformStandIn("dm-" + secrets.token_hex(20), mlflow_server.uri,
                              [PROJECT, EMPTY_PROJECT]).start()
    for number in range(CASES):
        image, label = phantom_case(number)
        rid = resource_id(number)
        standin.add_resource(PROJECT["name"], {"id": rid, "filename": f"ct_{number}.nii.gz",
                                               "mimetype": "application/gzip", "modality": "CT"},
                             nifti_bytes(image))
        for index, name in enumerate(LABELS, start=1):
            standin.add_annotation(
                {"id": f"{rid[:-2]}{index:02d}", "resource_id": rid, "identifier": name,
                 "type": "segmentation", "frame_index": None, "scope": "volume"},
                nifti_bytes((label == index).astype(np.uint8)),
            )
    image, _ = phantom_case(99)
    standin.add_resource(EMPTY_PROJECT["name"], {"id": resource_id(99), "filename": "x.nii.gz"},
                         nifti_bytes(image))
    yield standin
    standin.stop()


@pytest.fixture
def platform_settings(platform: PlatformStandIn, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> PlatformStandIn:
    for key, value in datamint_env(platform, tmp_path).items():
        if key.startswith("DATAMINT_") and key != "DATAMINT_PROJECT_NAME":
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("DATAMINT_CACHE_DIR", str(tmp_path / "cache"))
    return platform


def test_a_platform_project_is_listed_without_downloading_and_read_once_per_case(
    platform_settings, tmp_path
):
    from datamint_core.training import ImageDataset

    platform = platform_settings
    platform.reset()
    dataset = ImageDataset(project="Liver Segmentation")
    assert dataset.source == "platform" and dataset.project_id == PROJECT["id"]
    assert dataset.case_ids == tuple(resource_id(n) for n in range(CASES))
    assert dataset.label_names == LABELS
    listed = platform.requests[("api", "with_key")]

    case = dataset.load(resource_id(2))
    image, label = phantom_case(2)
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.label, label)
    assert case.spacing == pytest.approx((2.5, 0.8, 0.8))
    downloads = platform.requests[("api", "with_key")] - listed
    assert downloads == 1 + len(LABELS)  # the image and one mask per label
    dataset.load(resource_id(2))
    assert platform.requests[("api", "with_key")] - listed == downloads  # from the cache
    assert platform.requests[("api", "without_key")] == 0


def test_a_platform_project_without_segmentations_is_refused_naming_it(platform_settings):
    from datamint_core import ProjectDataError
    from datamint_core.training import ImageDataset

    with pytest.raises(ProjectDataError, match="'Not annotated' has 1 resource"):
        ImageDataset(project="Not annotated")


@needs_lightning
def test_the_seed_usage_example_runs_against_the_platform_and_a_real_tracking_server(
    platform, mlflow_server, tmp_path
):
    env = datamint_env(platform, tmp_path, DATAMINT_PROJECT_NAME="",
                       DATAMINT_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    completed = subprocess.run([sys.executable, "-c", SEED_EXAMPLE + CHECKS], env=env,
                               cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-4000:]
    found = result_of(completed.stdout)
    results = found["results"]
    print(results["test_results"])

    assert found["tracking_uri"] == f"datamint://{platform.mlflow_url.split('//')[1]}"
    assert found["run_ids"] == [results["run_id"]]
    assert {"test_dice", *(f"test_dice/{n}" for n in LABELS)} <= set(results["test_results"])
    # Straight at the server behind the gateway: the experiment named after the project, in
    # the project; the run; the registered model.
    client = mlflow.MlflowClient(mlflow_server.uri, registry_uri=mlflow_server.uri)
    experiment = client.get_experiment_by_name("Liver Segmentation")
    assert experiment.experiment_id == results["experiment_id"]
    assert experiment.tags["datamint.project_id"] == PROJECT["id"]
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [
        results["run_id"]
    ]
    version = client.get_model_version("Liver Segmentation", "1")
    assert version.run_id == results["run_id"]
    assert platform.requests[("mlflow", "without_key")] == 0
    assert not (tmp_path / "mlruns").exists()


@needs_lightning
def test_a_bare_mlflow_logger_logs_into_the_platform_when_lightning_was_imported_first(
    platform, mlflow_server, tmp_path
):
    code = """
import json
from lightning.pytorch.loggers import MLFlowLogger
import datamint_lightning, mlflow

logger = MLFlowLogger(experiment_name="logger-follows-platform")
logger.log_metrics({"loss": 0.25}, step=0)
logger.finalize("success")
print(json.dumps([logger._tracking_uri, mlflow.get_tracking_uri(), logger.run_id]))
"""
    env = datamint_env(platform, tmp_path, DATAMINT_PROJECT_NAME="")
    completed = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    logger_uri, mlflow_uri, run_id = json.loads(completed.stdout.strip().splitlines()[-1])
    assert logger_uri == mlflow_uri == f"datamint://{platform.mlflow_url.split('//')[1]}"
    client = mlflow.MlflowClient(mlflow_server.uri)
    assert client.get_run(run_id).data.metrics == {"loss": 0.25}
    assert not (tmp_path / "mlruns").exists()
