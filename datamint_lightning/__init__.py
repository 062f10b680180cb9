"""datamint_lightning: the ``[lightning]`` extra (MLflow checkpointing, dataset lineage).

- :class:`MLflowModelCheckpoint`: a Lightning ``ModelCheckpoint`` that mirrors its
  checkpoints into the MLflow run (rotated ones deleted there too), logs the best one as an
  MLflow model (``datamint`` flavor when the module is or wraps a Datamint model) and
  registers it; uploads run off the training loop and survive a tracking-server outage.
- :class:`DatamintMLflowDataset`: a Datamint project split as an ``mlflow.data`` dataset
  (source type ``datamint``, order-independent content digest).
- :class:`MLflowDatasetLineage` and :func:`log_dataset_splits`: log the train/val/test splits
  as run inputs, so a registered version leads back to its data.

Importing it without Lightning fails at once with the command that installs it.
"""

try:
    import lightning  # noqa: F401
    import torch  # noqa: F401
except ImportError:
    raise ImportError(
        "datamint_lightning needs Lightning and PyTorch, which are not installed; run: "
        'pip install "datamint[lightning]"'
    ) from None

import datamint_torch  # noqa: F401  (registers torch device detection with the core)
from datamint_core.dataset import DatamintDatasetSource, DatamintMLflowDataset
from datamint_lightning.checkpoint import REGISTER_STAGES, MLflowModelCheckpoint
from datamint_lightning.lineage import SPLIT_CONTEXTS, MLflowDatasetLineage, log_dataset_splits

__all__ = [
    "REGISTER_STAGES",
    "SPLIT_CONTEXTS",
    "DatamintDatasetSource",
    "DatamintMLflowDataset",
    "MLflowDatasetLineage",
    "MLflowModelCheckpoint",
    "log_dataset_splits",
]
