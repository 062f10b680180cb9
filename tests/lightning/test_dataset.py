"""Dataset lineage from Lightning: the splits logged as run inputs, and the core's dataset."""

from __future__ import annotations

import mlflow
import pytest

import datamint_core
import datamint_lightning
from datamint_lightning import DatamintMLflowDataset, log_dataset_splits
from tests.core.test_dataset import dataset, resources


def test_datamint_lightning_re_exports_the_core_dataset_classes():
    assert datamint_lightning.DatamintMLflowDataset is datamint_core.DatamintMLflowDataset
    assert datamint_lightning.DatamintDatasetSource is datamint_core.DatamintDatasetSource


def test_splits_are_logged_as_run_inputs_with_their_contexts(sqlite_tracking_uri):
    train, val = dataset(resources()[:2]), DatamintMLflowDataset("proj-1", "Liver", "val", ["c"])
    with mlflow.start_run() as run:
        log_dataset_splits(train=train, val=val)
    inputs = mlflow.MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    logged = {(i.tags[0].value, i.dataset.name, i.dataset.digest) for i in inputs}
    assert logged == {
        ("training", "Liver/train", train.digest),
        ("validation", "Liver/val", val.digest),
    }
    with pytest.raises(TypeError, match="test= must be an mlflow.data Dataset"):
        log_dataset_splits(run.info.run_id, test=["a"])


def test_splits_are_logged_to_a_run_that_is_not_the_active_one(sqlite_tracking_uri):
    train = dataset(resources()[:2])
    client = mlflow.MlflowClient()
    run_id = client.create_run(client.get_experiment_by_name("Default").experiment_id).info.run_id

    log_dataset_splits(run_id, train=train)

    (logged,) = client.get_run(run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest) == ("Liver/train", train.digest)
    assert [(tag.key, tag.value) for tag in logged.tags] == [("mlflow.data.context", "training")]
    assert mlflow.active_run() is None
