"""MLflowModelCheckpoint against a real ``mlflow server`` (proxied artifacts), outage included."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import mlflow
from lightning.pytorch.loggers import MLFlowLogger

from datamint_core import ImageResource, load_model
from datamint_lightning import MLflowModelCheckpoint
from tests.lightning.lit_models import LitSegmenter, PhantomData, phantoms
from tests.lightning.test_checkpoint import (
    check_registered_run,
    local_checkpoints,
    run_artifacts,
    train_and_test,
    trainer_for,
)


def test_against_the_server_checkpoints_mirror_the_run_and_the_best_one_is_registered(
    server_tracking, tmp_path
):
    data = PhantomData()
    checkpoint, _ = train_and_test(tmp_path, server_tracking.uri, data, model_name="served-seg")

    check_registered_run(mlflow.MlflowClient(server_tracking.uri), checkpoint, data, "served-seg")
    model = load_model("models:/served-seg/1")
    (result,) = model.predict([ImageResource(phantoms(1, seed=8)[0][0])])
    assert result[0].mask.shape == (16, 16)


class ServerOutage(pl.Callback):
    """Stops the server after ``down_at`` training steps and starts it again at ``up_at``."""

    def __init__(self, server, down_at: int, up_at: int) -> None:
        self.server, self.down_at, self.up_at = server, down_at, up_at
        self.down = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.down_at:
            self.server.stop()
            self.down = True
        elif trainer.global_step == self.up_at:
            self.server.start()
            self.down = False


def test_a_server_outage_mid_training_loses_nothing_and_registers_the_model_once(
    server_tracking, tmp_path
):
    data = PhantomData(train=32)  # 8 steps an epoch
    checkpoint = MLflowModelCheckpoint(
        monitor="train_loss",
        save_top_k=3,
        save_last=True,
        every_n_train_steps=2,
        model_name="outage-seg",
    )
    outage = ServerOutage(server_tracking, down_at=5, up_at=13)
    # Lightning's logger sends metrics itself; asynchronously, it does not stop on an outage.
    logger = MLFlowLogger(
        experiment_name="outage", tracking_uri=server_tracking.uri, synchronous=False
    )
    trainer = trainer_for(tmp_path, [checkpoint, outage], logger=logger, max_epochs=2)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(LitSegmenter(), data.loader("train"))
    finally:
        if outage.down:  # the module's server must outlive a failed test
            server_tracking.start()

    ours = [str(w.message) for w in caught if "MLflowModelCheckpoint" in str(w.message)]
    assert len(ours) == 1, ours
    assert ours[0].startswith(
        f"MLflowModelCheckpoint cannot log checkpoints to MLflow run {checkpoint.run_id} at "
        f"{server_tracking.uri} ("
    )
    assert "Training goes on; the checkpoints stay in" in ours[0]
    assert trainer.global_step == 16 and trainer.state.finished

    client = mlflow.MlflowClient(server_tracking.uri)
    kept = local_checkpoints(checkpoint.dirpath)
    assert len(kept) == 4 and "last.ckpt" in kept
    assert run_artifacts(client, checkpoint.run_id) == kept
    versions = client.search_model_versions("name = 'outage-seg'")
    assert [str(v.version) for v in versions] == ["1"]
    assert versions[0].run_id == checkpoint.run_id
