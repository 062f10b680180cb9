"""Dataset lineage: log the train/val/test splits as inputs of the training run.

A registered model version points at its run, and the run's inputs name the exact data
(by :class:`~datamint_lightning.DatamintMLflowDataset` digest) it was trained, validated and
tested on. Two ways to use it::

    trainer = Trainer(logger=MLFlowLogger(...),
                      callbacks=[MLflowDatasetLineage(train=train_ds, val=val_ds, test=test_ds)])

    class Data(LightningDataModule):
        def setup(self, stage):
            ...
            log_dataset_splits(self.trainer, train=self.train_ds, val=self.val_ds)
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from mlflow.data.dataset import Dataset
from typing_extensions import override

from datamint_core import _mlflow_internals

#: The ``mlflow.data.context`` tag each split is logged with.
SPLIT_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}


def log_dataset_splits(
    target: pl.Trainer | MLFlowLogger | str | None = None,
    *,
    train: Dataset | None = None,
    val: Dataset | None = None,
    test: Dataset | None = None,
) -> None:
    """Log the given splits as inputs of a run, with contexts training/validation/test.

    Args:
        target: whose run: a Trainer (its ``MLFlowLogger``), an ``MLFlowLogger``, a run id,
            or ``None`` for the active run (``mlflow.log_input``).
        train, val, test: MLflow datasets, such as :class:`DatamintMLflowDataset`.

    Raises:
        TypeError: a split is not an MLflow dataset, or ``target`` is none of the above.
        ValueError: a Trainer without an ``MLFlowLogger``.
    """
    splits = {"train": train, "val": val, "test": test}
    for split, dataset in splits.items():
        if dataset is not None and not isinstance(dataset, Dataset):
            raise TypeError(
                f"{split}= must be an mlflow.data Dataset (such as DatamintMLflowDataset), got "
                f"{type(dataset).__name__}."
            )
    given = {split: d for split, d in splits.items() if d is not None}
    if target is None:
        import mlflow

        for split, dataset in given.items():
            mlflow.log_input(dataset, context=SPLIT_CONTEXTS[split])
        return
    run_id, client = _run_of(target)
    client.log_inputs(
        run_id,
        datasets=[
            _mlflow_internals.dataset_input(dataset, SPLIT_CONTEXTS[split])
            for split, dataset in given.items()
        ],
    )


def _run_of(target: pl.Trainer | MLFlowLogger | str) -> tuple[str, Any]:
    from mlflow import MlflowClient

    if isinstance(target, str):
        return target, MlflowClient()
    logger = target
    if isinstance(target, pl.Trainer):
        logger = next((lg for lg in target.loggers if isinstance(lg, MLFlowLogger)), None)
        if logger is None:
            raise ValueError(
                "The Trainer has no MLFlowLogger to log the dataset splits to; add one to its "
                "loggers, or pass a run id."
            )
    if not isinstance(logger, MLFlowLogger):
        raise TypeError(
            f"target must be a Trainer, an MLFlowLogger, a run id or None, got "
            f"{type(target).__name__}."
        )
    return logger.run_id, logger.experiment  # type: ignore[return-value]


class MLflowDatasetLineage(Callback):
    """Log the splits as run inputs: train and val when fitting starts, test when testing does.

    A failure to log is a warning: lineage never stops training.

    Args:
        train, val, test: MLflow datasets, such as :class:`DatamintMLflowDataset`.

    Raises:
        TypeError: a split is not an MLflow dataset (the message names it).
    """

    def __init__(
        self,
        train: Dataset | None = None,
        val: Dataset | None = None,
        test: Dataset | None = None,
    ) -> None:
        for split, dataset in (("train", train), ("val", val), ("test", test)):
            if dataset is not None and not isinstance(dataset, Dataset):
                raise TypeError(
                    f"MLflowDatasetLineage({split}={dataset!r}) is not an mlflow.data Dataset; "
                    "give a DatamintMLflowDataset (or another MLflow dataset) or None."
                )
        self.train, self.val, self.test = train, val, test

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, train=self.train, val=self.val)

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, test=self.test)

    def _log(self, trainer: pl.Trainer, **splits: Dataset | None) -> None:
        if not trainer.is_global_zero or not any(d is not None for d in splits.values()):
            return
        try:
            log_dataset_splits(trainer, **splits)
        except Exception as error:
            rank_zero_warn(
                f"MLflowDatasetLineage could not log the dataset splits "
                f"({', '.join(s for s, d in splits.items() if d is not None)}): "
                f"{type(error).__name__}: {error}"
            )
