"""``datamint_lightning._lightning_internals`` against the installed Lightning: a real Trainer,
a tiny model, a real MLflow SQLite store, no mocks.

Each test pins one thing the adapter takes from Lightning's private side: that
``ModelCheckpoint`` writes, links and removes every checkpoint file through
``_save_checkpoint`` / ``_link_checkpoint`` / ``_remove_checkpoint`` (so the events replayed give
exactly the files on disk), that ``MLFlowLogger`` logs wherever ``_run_id`` / ``_experiment_id``
point, and that ``MLFlowLogger.__init__`` still takes the ``tracking_uri`` the wrapper fills in.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest

pytest.importorskip("lightning", reason="the Lightning adapter needs the [lightning] extra")

import lightning.pytorch as pl
import mlflow
import torch
from lightning.pytorch.loggers import MLFlowLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from datamint_lightning import MLflowModelCheckpoint
from datamint_lightning._lightning_internals import (
    CheckpointFileEvents,
    continue_logger_run,
)

EPOCHS = 4


class Tiny(pl.LightningModule):
    """A linear layer whose validation ``score`` improves (falls) every epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        return nn.functional.mse_loss(self.layer(inputs), targets)

    def validation_step(self, batch, batch_idx):
        self.log("score", -float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    inputs, targets = torch.randn(8, 2, generator=generator), torch.randn(8, 1, generator=generator)
    data = TensorDataset(inputs, targets)
    return DataLoader(data, batch_size=4)


def fit(tmp_path: Path, callback: pl.Callback, logger=False) -> None:
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=EPOCHS,
        accelerator="cpu",
        logger=logger,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(Tiny(), loader(), loader())


class Recorder(CheckpointFileEvents):
    """Records each event with what the file looked like when it was reported."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[tuple[str, str, bool, bool]] = []

    def _checkpoint_file_written(self, trainer: pl.Trainer, filepath: str) -> None:
        name = os.path.basename(filepath)
        self.events.append(("written", name, os.path.isfile(filepath), os.path.islink(filepath)))

    def _checkpoint_file_removed(self, trainer: pl.Trainer, filepath: str) -> None:
        self.events.append(("removed", os.path.basename(filepath), os.path.exists(filepath), False))


def replay(events: list[tuple[str, str, bool, bool]]) -> set[str]:
    files: set[str] = set()
    for kind, name, _, _ in events:
        (files.add if kind == "written" else files.discard)(name)
    return files


def on_disk(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def test_every_checkpoint_file_saved_or_rotated_away_is_reported_once_it_happened(tmp_path):
    recorder = Recorder(
        dirpath=tmp_path / "ckpt", monitor="score", mode="min", save_top_k=2, save_last=True
    )

    fit(tmp_path, recorder)

    events = recorder.events
    assert replay(events) == on_disk(tmp_path / "ckpt")
    assert all(present for kind, _, present, _ in events if kind == "written")
    assert not any(present for kind, _, present, _ in events if kind == "removed")
    removed = [name for kind, name, _, _ in events if kind == "removed"]
    assert removed == ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt"]  # top-2 rotation
    assert [name for kind, name, _, _ in events if kind == "written"].count("last.ckpt") == EPOCHS


def test_a_last_checkpoint_linked_to_the_newest_is_reported_as_written(tmp_path):
    recorder = Recorder(
        dirpath=tmp_path / "ckpt", monitor="score", mode="min", save_top_k=2, save_last="link"
    )

    fit(tmp_path, recorder)

    links = [event for event in recorder.events if event[1] == "last.ckpt"]
    assert len(links) == EPOCHS
    assert all(present and is_link for _, _, present, is_link in links)
    assert replay(recorder.events) == on_disk(tmp_path / "ckpt")
    assert os.path.realpath(tmp_path / "ckpt" / "last.ckpt") == str(
        tmp_path / "ckpt" / "epoch=3-step=8.ckpt"
    )


def test_the_checkpoint_callback_mirrors_the_files_on_disk_into_the_run(
    tmp_path, sqlite_tracking_uri
):
    checkpoint = MLflowModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="score", mode="min", save_top_k=2, save_last=True,
        register_model_on="predict",  # no model logged: only the checkpoint files matter here
    )  # fmt: skip
    logger = MLFlowLogger(experiment_name="compat", tracking_uri=sqlite_tracking_uri)

    fit(tmp_path, checkpoint, logger)

    artifacts = mlflow.MlflowClient().list_artifacts(logger.run_id, "checkpoints")
    assert {Path(a.path).name for a in artifacts} == on_disk(tmp_path / "ckpt")
    assert len(artifacts) == 3  # two best and last


def test_a_logger_pointed_at_another_run_logs_and_finishes_there(sqlite_tracking_uri):
    client = mlflow.MlflowClient()
    earlier = client.create_run(client.create_experiment("earlier")).info
    logger = MLFlowLogger(experiment_name="fresh", tracking_uri=sqlite_tracking_uri)
    fresh_run = logger.run_id

    continue_logger_run(logger, earlier.run_id, earlier.experiment_id)
    logger.log_hyperparams({"lr": 0.01})
    logger.log_metrics({"loss": 0.5}, step=3)
    logger.finalize("success")

    assert (logger.run_id, logger.experiment_id) == (earlier.run_id, earlier.experiment_id)
    run = client.get_run(earlier.run_id)
    assert run.data.metrics == {"loss": 0.5}
    assert run.data.params == {"lr": "0.01"}
    assert run.info.status == "FINISHED"
    assert client.get_run(fresh_run).data.metrics == {}


def test_a_logger_made_without_a_tracking_uri_logs_where_mlflow_points(sqlite_tracking_uri):
    # The wrapper fills in MLFlowLogger.__init__'s tracking_uri unless save_dir is given.
    parameters = inspect.signature(MLFlowLogger.__init__).parameters
    assert {"tracking_uri", "save_dir"} <= set(parameters)

    logger = MLFlowLogger(experiment_name="follows")

    assert logger.experiment.tracking_uri == sqlite_tracking_uri
    logger.log_metrics({"loss": 1.0}, step=0)
    assert mlflow.MlflowClient().get_run(logger.run_id).data.metrics == {"loss": 1.0}
