"""The seed's usage example (seed 001, "Usage Example"), runnable here.

Only its import paths are changed (``datamint.dataset`` -> ``datamint_core.training``,
``datamint.lightning`` -> ``datamint_lightning``), with ``accelerator="cpu"`` and a small
``image_size`` and ``max_epochs`` for a CPU test machine. The lines after it check what the
example promises and print it as JSON.
"""

from __future__ import annotations

SEED_EXAMPLE = """
import lightning as L
from datamint_core.training import ImageDataset
from datamint_lightning import DatamintDataModule, UNetPPTrainer

# Create dataset and datamodule
dataset = ImageDataset(project="Liver Segmentation")
datamodule = DatamintDataModule(
    dataset,
    batch_size=16,
    split={'train': 0.8, 'val': 0.1, 'test': 0.1},
)

# Use trainer with automatic MLflow integration
trainer = UNetPPTrainer(
    project="Liver Segmentation",
    image_size=32,
    batch_size=16,
    max_epochs=1,
    accelerator="cpu",
    register_model=True,  # Auto-register in MLflow
)

results = trainer.fit()

# Model is automatically logged and registered
print(results["test_results"])

import mlflow
mlflow.get_experiment_by_name("Liver Segmentation")  # Verify experiment exists
mlflow.search_runs(experiment_names=["Liver Segmentation"])  # View runs
"""

CHECKS = """
import json
experiment = mlflow.get_experiment_by_name("Liver Segmentation")
runs = mlflow.search_runs(experiment_names=["Liver Segmentation"])
version = mlflow.MlflowClient().get_model_version("Liver Segmentation", "1")
print("RESULT " + json.dumps({
    "tracking_uri": mlflow.get_tracking_uri(),
    "experiment_id": experiment.experiment_id if experiment else None,
    "run_ids": runs["run_id"].tolist(),
    "version_run_id": version.run_id,
    "results": {k: v for k, v in results.items() if k != "test_cases"},
    "test_cases": results["test_cases"],
    "splits_equal": {k: list(v) for k, v in datamodule.splits.items()} == results["splits"],
}))
"""

PREDICT = """
import json, os
import numpy as np
import mlflow
from datamint_core import load_model
from datamint_core.training import ImageDataset

case = ImageDataset(project="Liver Segmentation")[0]
volume = case.to_resource()
model = load_model("models:/Liver Segmentation/1", device="cpu")
(found,) = model.predict([volume], params={"mode": "volume"})
(on_slice,) = model.predict([volume], params={"mode": "slice", "slice_index": 4})
from datamint_core import ImageResource
(on_image,) = model.predict([ImageResource(case.image[4])], params={"mode": "image"})
print("RESULT " + json.dumps({
    "modes": model.get_supported_modes(),
    "volume": [[a.identifier, list(a.mask.shape), a.scope.value,
                list(a.spacing) if a.spacing else None,
                np.allclose(a.affine, case.affine) if a.affine is not None else None]
               for a in found],
    "slice": [[a.identifier, list(a.mask.shape), a.slice_index] for a in on_slice],
    "image": [[a.identifier, list(a.mask.shape)] for a in on_image],
    "spacing": list(case.spacing),
}))
"""


def result_of(stdout: str) -> dict:
    """The JSON the checks printed."""
    import json

    line = next(line for line in reversed(stdout.splitlines()) if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])
