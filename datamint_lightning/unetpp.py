"""``UNetPPTrainer``: train, test, log and register a 2-D UNet++ on a project, in one call.

::

    trainer = UNetPPTrainer(project="Liver Segmentation", image_size=256, batch_size=16,
                            max_epochs=50, accelerator="gpu", register_model=True)
    results = trainer.fit()
    results["test_results"]   # {"test_dice": ..., "test_dice/liver": ..., "test_hd95": ...}

What ``fit`` does: reads the project (:class:`~datamint_core.training.ImageDataset`),
splits it (:class:`DatamintDataModule`, the splits logged as the run's inputs), trains
MONAI's ``BasicUNetPlusPlus`` on 2-D slices with Dice + cross-entropy
(``monai.losses.DiceCELoss``), logs to MLflow into the experiment named after the project
(where ``mlflow.get_tracking_uri()`` points: the Datamint platform when configured, else
the embedded SQLite store), keeps the best checkpoint by validation loss
(:class:`MLflowModelCheckpoint`), logs it as a ``datamint`` model from code (no pickle; it
predicts ``image``, ``slice`` and ``volume``), registers it under the project's name, then
scores it on the test cases: whole volumes, segmented slice by slice as the logged model
does, each scored on its own voxel grid (Dice, IoU, HD95, ASSD, normalized surface Dice).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from typing_extensions import override

from datamint_core.training import ImageDataset
from datamint_lightning.checkpoint import MLflowModelCheckpoint
from datamint_lightning.datamodule import DEFAULT_SPLIT, DatamintDataModule
from datamint_torch.segmentation import (
    DEFAULT_FEATURES,
    UNetPPSegmenter,
    check_image_size,
    segment_volume,
)

#: Accelerators ``UNetPPTrainer`` accepts (Lightning's names).
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


class UNetPPModule(pl.LightningModule):
    """Trains a :class:`~datamint_torch.segmentation.UNetPPSegmenter`'s network.

    ``segmenter`` wraps the same network for MLflow (so the checkpoint callback logs it);
    the test step segments whole cases as the logged model does and scores each on its own
    voxel grid with :mod:`datamint_core.metrics` (Dice, IoU, HD95, ASSD, normalized surface
    Dice at ``tolerance_mm``); the test epoch logs their summary (``test_dice``,
    ``test_dice/<label>``, ...; MONAI's reductions) and :attr:`case_results` keeps each case's.
    """

    def __init__(self, label_names: Sequence[str], channel_names: Sequence[str],
                 image_size: int, features: Sequence[int] = DEFAULT_FEATURES,
                 learning_rate: float = 1e-3, tolerance_mm: float = 2.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        from monai.losses import DiceCELoss

        self.segmenter = UNetPPSegmenter(label_names=label_names, channel_names=channel_names,
                                         image_size=image_size, features=features)
        self.net = self.segmenter.get_pytorch_model()
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.learning_rate = learning_rate
        #: The normalized surface Dice's tolerance, in mm.
        self.tolerance_mm = tolerance_mm
        #: One dict per test case: ``{"case_id", "dice/<label>": ..., "hd95/<label>": ...}``.
        self.case_results: list[dict[str, Any]] = []
        #: The test split's summary: ``{"test_dice": ..., "test_dice/<label>": ...}``.
        self.test_summary: dict[str, float] = {}
        self._case_metrics: list[Any] = []

    @override
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    @override
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["image"]), batch["label"])
        self.log("train_loss", loss, batch_size=len(batch["image"]), prog_bar=True)
        return loss

    @override
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.log("val_loss", self.loss(self(batch["image"]), batch["label"]),
                 batch_size=len(batch["image"]), prog_bar=True)

    @override
    def on_test_epoch_start(self) -> None:
        self.case_results = []

    @override
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        from datamint_core.metrics import flatten_metrics, segmentation_metrics

        image = batch["image"][0]
        truth = batch["label"][0].cpu().numpy()
        spacing = tuple(float(s) for s in batch["spacing"][0])
        predicted = segment_volume(self.net, image, self.segmenter.image_size).cpu().numpy()
        labels = dict(enumerate(self.segmenter.label_names, start=1))
        scores = segmentation_metrics(predicted, truth, labels=labels, spacing=spacing,
                                      tolerance_mm=self.tolerance_mm)
        self._case_metrics.append(scores)
        self.case_results.append({"case_id": batch["case_id"][0], **flatten_metrics(scores)})

    @override
    def on_test_epoch_end(self) -> None:
        from datamint_core.metrics import summarize_metrics

        self.test_summary = {f"test_{k}": float(v)
                             for k, v in summarize_metrics(self._case_metrics).items()}
        self._case_metrics = []
        for name, value in self.test_summary.items():
            if math.isfinite(value):  # MLflow and Lightning take finite numbers only
                self.log(name, value)

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.learning_rate)


class UNetPPTrainer:
    """Train a 2-D UNet++ on a project's images, with MLflow tracking and registration.

    Example::

        trainer = UNetPPTrainer(project="Liver Segmentation", image_size=256,
                                batch_size=16, max_epochs=50, accelerator="gpu")
        results = trainer.fit()
        print(results["test_results"])

    Args:
        project: a project name or directory (as :class:`ImageDataset` takes it).
        image_size: the side slices are resized to (a multiple of 16).
        batch_size: slices per batch.
        max_epochs: training epochs.
        accelerator: ``auto``, ``cpu``, ``gpu``/``cuda`` or ``mps``; one the machine lacks is
            refused here, at once.
        register_model: register the best model under the project's name (or
            ``model_name``).
        split: the share of cases per split (default 0.8 / 0.1 / 0.1).
        seed: seeds the split, the sampling and the network's initial weights.
        learning_rate: AdamW's learning rate.
        features: the UNet++ widths (MONAI's ``features``).
        samples_per_case: slices drawn from each training case per epoch.
        tolerance_mm: the normalized surface Dice's tolerance in the test results.
        datamodule: a :class:`DatamintDataModule` to use instead of building one.
        experiment_name: the MLflow experiment (default: the project's name).
        model_name: the registered model's name (default: the project's name).
        work_dir: where checkpoints are written (default: a new temporary directory).
        projects_dir: the local projects root (see :class:`ImageDataset`).
        trainer_kwargs: more arguments for ``lightning.pytorch.Trainer`` (its ``callbacks``
            join the checkpoint callback).

    Raises:
        MisconfigurationException: an accelerator this machine does not have (the message
            says what to use instead), or a bad argument.
        ValueError: a bad ``image_size``, ``batch_size``, ``max_epochs`` or split.
    """

    def __init__(
        self,
        project: str | os.PathLike[str],
        image_size: int = 256,
        batch_size: int = 16,
        max_epochs: int = 50,
        accelerator: str = "auto",
        register_model: bool = True,
        *,
        split: Mapping[str, float] | None = None,
        seed: int = 0,
        learning_rate: float = 1e-3,
        features: Sequence[int] = DEFAULT_FEATURES,
        samples_per_case: int = 16,
        tolerance_mm: float = 2.0,
        datamodule: DatamintDataModule | None = None,
        experiment_name: str | None = None,
        model_name: str | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        projects_dir: str | os.PathLike[str] | None = None,
        trainer_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        check_image_size(image_size)
        for name, value in (("batch_size", batch_size), ("max_epochs", max_epochs),
                            ("samples_per_case", samples_per_case)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UNetPPTrainer({name}={value!r}) is not accepted; give a "
                                 "positive integer.")
        if len(tuple(features)) != 6 or not all(isinstance(f, int) and f > 0 for f in features):
            raise ValueError(f"UNetPPTrainer(features={tuple(features)!r}) is not accepted; give "
                             f"six positive widths, such as {DEFAULT_FEATURES}.")
        if datamodule is not None and not isinstance(datamodule, DatamintDataModule):
            raise TypeError(f"UNetPPTrainer(datamodule=...) takes a DatamintDataModule, got "
                            f"{type(datamodule).__name__}.")
        check_accelerator(accelerator)
        self.project = project
        self.image_size = image_size
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.accelerator = accelerator
        self.register_model = bool(register_model)
        self.split = dict(split) if split is not None else dict(DEFAULT_SPLIT)
        self.seed = seed
        self.learning_rate = learning_rate
        self.features = tuple(features)
        self.samples_per_case = samples_per_case
        self.tolerance_mm = tolerance_mm
        self.datamodule = datamodule
        self.experiment_name = experiment_name
        self.model_name = model_name
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.projects_dir = projects_dir
        self.trainer_kwargs = dict(trainer_kwargs or {})
        #: The Lightning trainer and module of the last ``fit``.
        self.trainer: pl.Trainer | None = None
        self.module: UNetPPModule | None = None
        self.checkpoint: MLflowModelCheckpoint | None = None

    def _datamodule(self) -> DatamintDataModule:
        if self.datamodule is not None:
            return self.datamodule
        dataset = ImageDataset(self.project, projects_dir=self.projects_dir)
        return DatamintDataModule(
            dataset, batch_size=self.batch_size, split=self.split, seed=self.seed,
            image_size=self.image_size, samples_per_case=self.samples_per_case,
        )

    def fit(self) -> dict[str, Any]:
        """Train, keep the best checkpoint, log and register it, and test it.

        Returns:
            ``{"test_results": {"test_dice": ..., "test_dice/<label>": ..., "test_hd95": ...},
            "test_cases": [per-case scores], "run_id", "experiment_id", "experiment_name",
            "tracking_uri", "model_uri", "registered_model_name",
            "registered_model_version", "best_checkpoint", "splits"}``.
        """
        import mlflow

        datamodule = self._datamodule()
        dataset = datamodule.dataset
        experiment = self.experiment_name or dataset.project_name
        tracking_uri = mlflow.get_tracking_uri()
        _activate_platform_project(dataset, tracking_uri)
        work_dir = self.work_dir or Path(tempfile.mkdtemp(prefix="datamint-unetpp-"))
        work_dir.mkdir(parents=True, exist_ok=True)
        pl.seed_everything(self.seed, verbose=False)
        module = UNetPPModule(dataset.label_names, dataset.channel_names, datamodule.image_size,
                              self.features, self.learning_rate, self.tolerance_mm)
        model_code = work_dir / "unetpp_model.py"
        model_code.write_text(module.segmenter.code_file_text())
        import monai

        registered = (self.model_name or dataset.project_name) if self.register_model else None
        checkpoint = MLflowModelCheckpoint(
            dirpath=work_dir / "checkpoints", filename="{epoch:02d}-{val_loss:.3f}",
            monitor="val_loss" if datamodule.splits.get("val") else None, mode="min",
            save_top_k=1, model_name=registered, model_code=model_code,
            extra_pip_requirements=[f"monai=={monai.__version__}"],
        )
        logger = MLFlowLogger(experiment_name=experiment, tracking_uri=tracking_uri,
                              run_name=f"unetpp-{datamodule.image_size}px")
        options: dict[str, Any] = {
            "max_epochs": self.max_epochs, "accelerator": self.accelerator, "devices": 1,
            "logger": logger, "callbacks": [checkpoint], "default_root_dir": work_dir,
            "log_every_n_steps": 1, "enable_progress_bar": False,
            "enable_model_summary": False, "num_sanity_val_steps": 0,
        }
        extra = dict(self.trainer_kwargs)
        options["callbacks"] = [checkpoint, *extra.pop("callbacks", [])]
        options.update(extra)
        trainer = pl.Trainer(**options)
        self.trainer, self.module, self.checkpoint = trainer, module, checkpoint
        trainer.fit(module, datamodule=datamodule)
        if datamodule.splits.get("test"):
            best = "best" if checkpoint.best_model_path else None
            trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
        return {
            "test_results": dict(module.test_summary),
            "test_cases": list(module.case_results),
            "run_id": logger.run_id,
            "experiment_id": logger.experiment_id,
            "experiment_name": experiment,
            "tracking_uri": tracking_uri,
            "model_uri": checkpoint.logged_model_uri,
            "registered_model_name": registered,
            "registered_model_version": checkpoint.registered_model_version,
            "best_checkpoint": checkpoint.best_model_path or None,
            "splits": {k: list(v) for k, v in datamodule.splits.items()},
        }


def check_accelerator(accelerator: str) -> None:
    """Refuse, at once, an accelerator this machine does not have.

    Raises:
        MisconfigurationException: an unknown name, or a GPU/MPS that is not there (the
            message names the fix).
    """
    if accelerator not in ACCELERATORS:
        raise MisconfigurationException(
            f"accelerator={accelerator!r} is not accepted; give one of {ACCELERATORS}."
        )
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise MisconfigurationException(
            f"accelerator={accelerator!r}, but PyTorch sees no CUDA GPU on this machine (torch "
            f"{torch.__version__}, {build}). Use accelerator='cpu' (or 'auto', which picks a GPU "
            "when there is one), or run where a GPU and a CUDA build of torch are installed."
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise MisconfigurationException(
            "accelerator='mps', but Apple's Metal (MPS) is not available here; use "
            "accelerator='cpu' or 'auto'."
        )


def _activate_platform_project(dataset: ImageDataset, tracking_uri: str) -> None:
    """Tracking into the platform with a platform project: make it the active project, so
    the experiment is created in it."""
    from datamint_core.platform.config import SCHEME

    if dataset.source == "platform" and tracking_uri.startswith(f"{SCHEME}://"):
        from datamint_core.platform import set_project

        set_project(dataset.project_id)

