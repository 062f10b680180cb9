"""MLflowModelCheckpoint with a real Trainer on the CPU, into the embedded SQLite store."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import lightning.pytorch as pl
import mlflow
import numpy as np
import pytest
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from datamint_core import ImageResource, SegmentationAnnotation, load_model
from datamint_lightning import MLflowDatasetLineage, MLflowModelCheckpoint
from tests.lightning.lit_models import BrokenForward, LitSegmenter, PhantomData, phantoms


def trainer_for(tmp_path: Path, callbacks: list, logger=None, max_epochs: int = 3, **kwargs):
    return pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        **kwargs,
    )


def run_artifacts(client: mlflow.MlflowClient, run_id: str, folder: str = "checkpoints") -> set:
    found = set()
    for entry in client.list_artifacts(run_id, folder):
        if entry.is_dir:
            found |= run_artifacts(client, run_id, entry.path)
        else:
            found.add(entry.path[len("checkpoints/") :])
    return found


def local_checkpoints(dirpath) -> set:
    return {
        str(path.relative_to(dirpath)).replace(os.sep, "/")
        for path in Path(dirpath).rglob("*.ckpt")
    }


def train_and_test(tmp_path, tracking_uri: str, data: PhantomData, **checkpoint_kwargs):
    """fit (3 epochs, top-2 by val_loss + last), then test; returns (checkpoint, trainer)."""
    checkpoint = MLflowModelCheckpoint(
        monitor="val_loss",
        save_top_k=2,
        save_last=True,
        filename="{epoch:02d}-{val_loss:.2f}",
        **checkpoint_kwargs,
    )
    lineage = MLflowDatasetLineage(
        train=data.dataset("train"), val=data.dataset("val"), test=data.dataset("test")
    )
    logger = MLFlowLogger(experiment_name="lit", tracking_uri=tracking_uri)
    trainer = trainer_for(tmp_path, [checkpoint, lineage], logger=logger)
    module = LitSegmenter()
    trainer.fit(module, data.loader("train"), data.loader("val"))
    trainer.test(module, data.loader("test"), ckpt_path="best")
    return checkpoint, trainer


def check_registered_run(client, checkpoint, data: PhantomData, model_name: str) -> None:
    """What the issue asks of a finished run, on any tracking backend."""
    run_id = checkpoint.run_id
    # Exactly the checkpoints kept on disk: top-2 by val_loss, plus last.ckpt.
    kept = local_checkpoints(checkpoint.dirpath)
    assert len(kept) == 3 and "last.ckpt" in kept
    assert run_artifacts(client, run_id) == kept

    (version,) = client.search_model_versions(f"name = '{model_name}'")
    assert str(version.version) == "1" and version.run_id == run_id
    best = os.path.basename(checkpoint.best_model_path)
    assert version.tags["datamint.checkpoint"] == best
    # 'epoch=01-val_loss=0.66.ckpt' is not a valid model name; its logged model's name is.
    assert version.source.startswith("models:/")
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert (
        logged.name
        == checkpoint.model_names[best]
        == (best.removesuffix(".ckpt").replace("=", "_").replace(".", "_"))
    )
    assert "test_loss" in {metric.key for metric in logged.metrics}

    inputs = client.get_run(version.run_id).inputs.dataset_inputs
    by_context = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs
    }
    assert sorted(by_context) == ["test", "training", "validation"]
    for context, split in (("training", "train"), ("validation", "val"), ("test", "test")):
        assert by_context[context].digest == data.dataset(split).digest
        assert by_context[context].source_type == "datamint"


def test_checkpoints_mirror_the_run_and_the_best_one_is_registered_with_lineage(
    sqlite_tracking_uri, tmp_path
):
    data = PhantomData()
    checkpoint, _ = train_and_test(tmp_path, sqlite_tracking_uri, data, model_name="phantom-seg")
    client = mlflow.MlflowClient(sqlite_tracking_uri)
    check_registered_run(client, checkpoint, data, "phantom-seg")
    assert checkpoint.registered_model_version == 1

    model = load_model("models:/phantom-seg/1")
    images, masks = phantoms(2, seed=9)
    result = model.predict([ImageResource(image) for image in images])
    assert [len(entry) for entry in result] == [1, 1]
    assert isinstance(result[0][0], SegmentationAnnotation)
    assert result[0][0].mask.shape == images[0].shape
    assert model.get_supported_modes() == load_model("models:/phantom-seg/1").get_supported_modes()
    assert np.mean(result[0][0].mask == masks[0].astype(bool)) > 0.5


def test_a_plain_module_is_logged_with_the_pytorch_flavor_at_test_end_with_its_signature(
    sqlite_tracking_uri, tmp_path
):
    import mlflow.pytorch
    import torch

    data = PhantomData()
    # The public Datamint SDK's call form: positional dirpath and its option names.
    checkpoint = MLflowModelCheckpoint(
        str(tmp_path / "sdk-checkpoints"), monitor="val_loss", register_model_on="test",
        register_model_name="plain-seg", additional_metadata={"dataset": "phantoms-v1"},
        log_model_at_end_only=True,
    )
    logger = MLFlowLogger(experiment_name="plain", tracking_uri=sqlite_tracking_uri)
    trainer = trainer_for(tmp_path, [checkpoint], logger=logger, max_epochs=2)
    module = LitSegmenter(wrap_datamint=False)
    trainer.fit(module, data.loader("train"), data.loader("val"))
    client = mlflow.MlflowClient(sqlite_tracking_uri)
    assert client.search_model_versions("name = 'plain-seg'") == []  # not before the test stage

    trainer.test(module, data.loader("test"))

    (version,) = client.search_model_versions("name = 'plain-seg'")
    info = mlflow.models.get_model_info("models:/plain-seg/1")
    assert "pytorch" in info.flavors and "datamint" not in info.flavors
    assert info.signature.inputs.to_dict() == [
        {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": (-1, 1, 16, 16)}}
    ]
    assert info.signature.outputs.inputs[0].shape == (-1, 1, 16, 16)
    assert checkpoint.get_last_model_uri() == version.source
    assert info.metadata["dataset"] == "phantoms-v1"
    assert {p.parent for p in (tmp_path / "sdk-checkpoints").glob("*.ckpt")} == {
        tmp_path / "sdk-checkpoints"}
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    (test_loss,) = [m.value for m in logged.metrics if m.key == "test_loss"]
    assert test_loss == pytest.approx(trainer.callback_metrics["test_loss"].item())
    net = mlflow.pytorch.load_model("models:/plain-seg/1")
    images = torch.from_numpy(phantoms(3, seed=5)[0])[:, None]
    assert net(images).shape == (3, 1, 16, 16)


def test_resuming_continues_the_run_and_registers_no_duplicate_version(
    sqlite_tracking_uri, tmp_path
):
    data = PhantomData()
    client = mlflow.MlflowClient(sqlite_tracking_uri)

    def fit(max_epochs: int, ckpt_path=None, val_offset: float = 0.0) -> MLflowModelCheckpoint:
        checkpoint = MLflowModelCheckpoint(
            monitor="val_loss", save_top_k=2, save_last=True, model_name="resumed"
        )
        logger = MLFlowLogger(experiment_name="resume", tracking_uri=sqlite_tracking_uri)
        trainer = trainer_for(tmp_path, [checkpoint], logger=logger, max_epochs=max_epochs)
        module = LitSegmenter(val_offset=val_offset)
        trainer.fit(module, data.loader("train"), data.loader("val"), ckpt_path=ckpt_path)
        return checkpoint

    first = fit(2)
    last = os.path.join(first.dirpath, "last.ckpt")
    assert first.registered_model_version == 1
    again = fit(2, ckpt_path=last)  # max_epochs reached already: nothing runs

    assert again.run_id == first.run_id
    assert again.dirpath == first.dirpath
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert [run.info.run_id for run in runs] == [first.run_id]  # the logger's new run is gone

    # One more epoch whose validation is worse: the best checkpoint stays the registered one.
    longer = fit(3, ckpt_path=last, val_offset=10.0)
    assert longer.run_id == first.run_id
    assert longer.best_model_path == first.best_model_path
    assert longer.registered_model_version == 1
    assert [str(v.version) for v in client.search_model_versions("name = 'resumed'")] == ["1"]
    assert run_artifacts(client, first.run_id) == local_checkpoints(first.dirpath)
    assert client.get_run(first.run_id).info.status == "FINISHED"
    assert len(client.get_metric_history(first.run_id, "val_loss")) == 3


def test_register_model_on_outside_the_four_stages_is_refused_with_the_accepted_ones():
    with pytest.raises(MisconfigurationException) as raised:
        MLflowModelCheckpoint(register_model_on="fit")
    assert str(raised.value) == (
        "MLflowModelCheckpoint(register_model_on='fit') is not a stage; accepted: "
        "'train', 'val', 'test', 'predict'."
    )
    with pytest.raises(MisconfigurationException, match=r"model_name='a/b'"):
        MLflowModelCheckpoint(model_name="a/b")
    with pytest.raises(MisconfigurationException, match=r"artifact_dir='/abs'"):
        MLflowModelCheckpoint(artifact_dir="/abs")
    with pytest.raises(MisconfigurationException, match=r"input_from_batch=3\) is not callable"):
        MLflowModelCheckpoint(input_from_batch=3)


def test_sdk_option_names_that_mean_something_else_here_are_refused_with_the_fix():
    with pytest.raises(MisconfigurationException, match="model_name='a' and the Datamint "
                       "SDK's register_model_name='b'; they are the same option, give one"):
        MLflowModelCheckpoint(model_name="a", register_model_name="b")
    with pytest.raises(MisconfigurationException, match="log_model_at_end_only=False\\) is not "
                       "supported: every checkpoint is mirrored"):
        MLflowModelCheckpoint(log_model_at_end_only=False)
    assert MLflowModelCheckpoint(register_model_name="seg").model_name == "seg"
    assert MLflowModelCheckpoint().get_last_model_uri() is None


def test_a_model_name_with_no_mlflow_run_fails_before_training(tmp_path):
    module = LitSegmenter()
    before = [p.detach().clone() for p in module.parameters()]
    trainer = trainer_for(tmp_path, [MLflowModelCheckpoint(model_name="orphan")])
    with pytest.raises(
        MisconfigurationException, match="add lightning.pytorch.loggers.MLFlowLogger"
    ):
        trainer.fit(module, PhantomData().loader("train"))
    assert all((a == b).all() for a, b in zip(before, module.parameters(), strict=True))


def test_without_a_run_it_warns_once_and_checkpoints_locally(tmp_path):
    checkpoint = MLflowModelCheckpoint(save_top_k=-1, every_n_train_steps=2)
    trainer = trainer_for(tmp_path, [checkpoint], max_epochs=1)
    with pytest.warns(UserWarning, match="checkpoints are saved locally only") as caught:
        trainer.fit(LitSegmenter(), PhantomData().loader("train"))
    assert sum("MLflowModelCheckpoint" in str(w.message) for w in caught) == 1
    assert len(local_checkpoints(checkpoint.dirpath)) == 2
    assert checkpoint.run_id is None


def test_a_forward_that_fails_on_the_signature_batch_warns_and_the_model_is_still_registered(
    sqlite_tracking_uri, tmp_path
):
    data = PhantomData()
    checkpoint = MLflowModelCheckpoint(monitor="val_loss", model_name="no-signature")
    logger = MLFlowLogger(experiment_name="broken", tracking_uri=sqlite_tracking_uri)
    trainer = trainer_for(tmp_path, [checkpoint], logger=logger, max_epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(BrokenForward(), data.loader("train"), data.loader("val"))
    messages = [str(w.message) for w in caught if "forward failed" in str(w.message)]
    assert messages == [
        "BrokenForward.forward failed on the first batch's input (a torch.float32 tensor of "
        "shape (2, 1, 16, 16)): ValueError: this forward expects a dict of tensors. The model "
        "is logged without a signature."
    ]
    assert trainer.state.finished and checkpoint.registered_model_version == 1
    model = load_model("models:/no-signature/1")
    (result,) = model.predict([ImageResource(phantoms(1, seed=4)[0][0])])
    assert result[0].mask.shape == (16, 16)
