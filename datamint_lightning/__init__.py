"""datamint_lightning: the ``[lightning]`` extra (MLflow checkpointing, dataset lineage).

- :class:`MLflowModelCheckpoint`: a Lightning ``ModelCheckpoint`` that mirrors its
  checkpoints into the MLflow run (rotated ones deleted there too), logs the best one as an
  MLflow model (``datamint`` flavor when the module is or wraps a Datamint model) and
  registers it; uploads run off the training loop and survive a tracking-server outage.
- :class:`DatamintMLflowDataset`: a Datamint project split as an ``mlflow.data`` dataset
  (source type ``datamint``, order-independent content digest).
- :class:`MLflowDatasetLineage` and :func:`log_dataset_splits`: log the train/val/test splits
  as run inputs, so a registered version leads back to its data.
- :class:`DatamintDataModule`: a project's cases (an ``ImageDataset``), split by case with a
  seed, sampled as 2-D slices or 3-D patches, the splits logged as the run's inputs.
- :class:`UNetPPTrainer`: MONAI's UNet++ trained on a project, tracked in the experiment named
  after it, the best model logged from code and registered, test Dice per label returned.
- Importing it makes Lightning's ``MLFlowLogger()`` log where ``mlflow.get_tracking_uri()``
  points, whatever was imported first (see ``_lightning_internals``).

Importing it without Lightning fails at once with the command that installs it.
"""

from datamint_core._extras import missing_extra

try:
    import lightning  # noqa: F401
    import torch  # noqa: F401
except ImportError as error:
    needs = "PyTorch" if error.name == "torch" else "Lightning"
    raise missing_extra(f"datamint_lightning needs {needs}", "lightning") from None

import datamint_torch  # noqa: F401  (registers torch device detection with the core)
from datamint_core.dataset import DatamintDatasetSource, DatamintMLflowDataset
from datamint_lightning._lightning_internals import follow_mlflow_tracking_uri
from datamint_lightning.checkpoint import REGISTER_STAGES, MLflowModelCheckpoint
from datamint_lightning.datamodule import DatamintDataModule
from datamint_lightning.lineage import SPLIT_CONTEXTS, MLflowDatasetLineage, log_dataset_splits
from datamint_lightning.unetpp import UNetPPModule, UNetPPTrainer

follow_mlflow_tracking_uri()

__all__ = [
    "REGISTER_STAGES",
    "SPLIT_CONTEXTS",
    "DatamintDataModule",
    "DatamintDatasetSource",
    "DatamintMLflowDataset",
    "MLflowDatasetLineage",
    "MLflowModelCheckpoint",
    "UNetPPModule",
    "UNetPPTrainer",
    "log_dataset_splits",
]
