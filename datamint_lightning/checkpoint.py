"""``MLflowModelCheckpoint``: checkpoints mirrored into an MLflow run, the best one registered.

What lands in the run (the one Lightning's ``MLFlowLogger`` logs to, or the active run)::

    checkpoints/epoch=0-step=4.ckpt        every checkpoint kept on disk, under its own name;
    checkpoints/last.ckpt                  rotated-out ones are deleted from the run too
    <model name>/                          at the end of ``register_model_on``: the best
                                           checkpoint as an MLflow model (``datamint`` flavor
                                           when the module is or wraps a Datamint model, else
                                           ``pytorch``), registered as ``model_name``

A logged model's name is the best checkpoint's name in a form MLflow accepts
(``epoch=00-val_loss=0.78.ckpt`` -> ``epoch_00-val_loss_0_78``); the original name is kept
in the model's ``datamint.checkpoint`` tag and in :attr:`MLflowModelCheckpoint.model_names`.

Uploads run in a background thread. When the tracking server cannot be reached, training
goes on, one warning says so, the checkpoints stay on disk, and the uploads are retried at
every new checkpoint and at the end of the stage.

The file holds one class and stays over 500 lines for it: Lightning's callback API puts the
argument checks, the stage hooks, ``state_dict`` and the resume logic on one object. What is
not the callback's own lives beside it: the transfers in ``_artifact_sync``, logging a model
and finding it again in ``_model_logging``, Lightning's private hooks in
``_lightning_internals``.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

from datamint_lightning._artifact_sync import ArtifactSync
from datamint_lightning._lightning_internals import CheckpointFileEvents, continue_logger_run
from datamint_lightning._model_logging import (
    CHECKPOINT_KEY_TAG,
    CHECKPOINT_SCORE_TAG,
    CHECKPOINT_TAG,
    find_logged_model,
    find_registered_version,
    infer_training_signature,
    input_of,
    log_lightning_model,
    log_model_metrics,
    model_name_for,
    signature_sample,
    weights_of,
)

_logger = logging.getLogger(__name__)

#: The stages at whose end the best model can be logged and registered.
REGISTER_STAGES = ("train", "val", "test", "predict")
_ERROR_TEXT_LIMIT = 300


class MLflowModelCheckpoint(CheckpointFileEvents):
    """A :class:`~lightning.pytorch.callbacks.ModelCheckpoint` that logs to MLflow as it goes.

    Every checkpoint it saves is logged as an artifact of the run, every checkpoint it
    removes (top-k rotation) is deleted from the run; at the end of ``register_model_on`` the
    best checkpoint is logged as an MLflow model and, with ``model_name``, registered. Test
    metrics are attached to the logged model. Resuming from one of its checkpoints continues
    the same run and does not register the same checkpoint twice.

    Example::

        checkpoint = MLflowModelCheckpoint(monitor="val_loss", save_top_k=2,
                                           model_name="liver-seg")
        trainer = Trainer(logger=MLFlowLogger(tracking_uri="sqlite:///mlflow.db"),
                          callbacks=[checkpoint])
        trainer.fit(module, datamodule)
        checkpoint.registered_model_version    # 1

    Args:
        register_model_on: the stage at whose end the best model is logged: ``train``
            (end of ``fit``), ``val`` (end of ``validate``), ``test`` or ``predict``.
        model_name: register the logged model under this name (needs an MLflow run: an
            ``MLFlowLogger`` or an active run).
        artifact_dir: the folder of the run that holds the checkpoints.
        input_from_batch: picks the model input out of a batch, for the signature; by
            default the batch itself, its first item, or its ``image``/``input``/``x`` key.
        model_code: a ``.py`` file that builds the Datamint model (it calls
            ``mlflow.models.set_model``); the model is then logged from code with the trained
            weights, so it loads with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``.
        code_paths, extra_pip_requirements: passed to MLflow when the model is logged.
        additional_metadata: a JSON-ready dict stored as the logged model's MLmodel metadata.
        register_model_name, log_model_at_end_only: the public Datamint SDK's names, accepted
            so its call forms keep working (``register_model_name`` is ``model_name``; only
            ``log_model_at_end_only=True``, its default, is supported).
        *args, **kwargs: the arguments of :class:`~lightning.pytorch.callbacks.ModelCheckpoint`
            (``dirpath`` first, ``filename``, ``monitor``, ``save_top_k``, ``save_last``, ...).

    Raises:
        MisconfigurationException: a bad argument (the message repeats it), or, at setup,
            ``model_name`` with no MLflow run to log into.
    """

    def __init__(
        self,
        *args: Any,
        register_model_on: str = "train",
        model_name: str | None = None,
        artifact_dir: str = "checkpoints",
        input_from_batch: Callable[[Any], torch.Tensor] | None = None,
        model_code: str | os.PathLike[str] | None = None,
        code_paths: list[str] | None = None,
        extra_pip_requirements: list[str] | None = None,
        additional_metadata: dict[str, Any] | None = None,
        register_model_name: str | None = None,
        log_model_at_end_only: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if register_model_name is not None:
            if model_name is not None and model_name != register_model_name:
                raise MisconfigurationException(
                    f"MLflowModelCheckpoint got model_name={model_name!r} and the Datamint SDK's "
                    f"register_model_name={register_model_name!r}; they are the same option, "
                    "give one."
                )
            model_name = register_model_name
        if log_model_at_end_only is not True:
            raise MisconfigurationException(
                f"MLflowModelCheckpoint(log_model_at_end_only={log_model_at_end_only!r}) is not "
                "supported: every checkpoint is mirrored into the run as an artifact, and the "
                "best one is logged as a model at the end of register_model_on. Leave it out."
            )
        if additional_metadata is not None and not isinstance(additional_metadata, dict):
            raise MisconfigurationException(
                f"MLflowModelCheckpoint(additional_metadata={additional_metadata!r}) is not a "
                "dict; give a JSON-ready dict, stored as the logged model's MLmodel metadata."
            )
        if register_model_on not in REGISTER_STAGES:
            raise MisconfigurationException(
                f"MLflowModelCheckpoint(register_model_on={register_model_on!r}) is not a stage; "
                f"accepted: {', '.join(map(repr, REGISTER_STAGES))}."
            )
        if model_name is not None and (
            not isinstance(model_name, str)
            or not model_name.strip()
            or any(c in model_name for c in "/:")
        ):
            raise MisconfigurationException(
                f"MLflowModelCheckpoint(model_name={model_name!r}) is not a valid registered "
                "model name; give a non-empty string without '/' or ':', or None to log the "
                "model without registering it."
            )
        if (
            not isinstance(artifact_dir, str)
            or not artifact_dir.strip("/")
            or posixpath.isabs(artifact_dir)
            or ".." in artifact_dir.split("/")
        ):
            raise MisconfigurationException(
                f"MLflowModelCheckpoint(artifact_dir={artifact_dir!r}) is not a folder of the "
                "run; give a relative path such as 'checkpoints'."
            )
        if input_from_batch is not None and not callable(input_from_batch):
            raise MisconfigurationException(
                f"MLflowModelCheckpoint(input_from_batch={input_from_batch!r}) is not callable; "
                "give a function that takes a batch and returns the model's input tensor."
            )
        if model_code is not None and (
            not os.fspath(model_code).endswith(".py") or not os.path.isfile(model_code)
        ):
            raise MisconfigurationException(
                f"MLflowModelCheckpoint(model_code={os.fspath(model_code)!r}) is not an existing "
                ".py file; give the file that calls mlflow.models.set_model(...), or None."
            )
        self.model_code = os.fspath(model_code) if model_code is not None else None
        self.code_paths = list(code_paths) if code_paths else None
        self.extra_pip_requirements = list(extra_pip_requirements or []) or None
        self.additional_metadata = dict(additional_metadata) if additional_metadata else None
        self.register_model_on = register_model_on
        self.model_name = model_name
        self.artifact_dir = artifact_dir.strip("/")
        self.input_from_batch = input_from_batch
        #: ``{checkpoint name: the name of its logged model}`` for every checkpoint saved.
        self.model_names: dict[str, str] = {}
        #: The run the checkpoints go to (``None`` until setup, or with no MLflow run).
        self.run_id: str | None = None
        #: The logged best model (``models:/<model id>``), once logged.
        self.logged_model_uri: str | None = None
        #: The registered version of ``model_name``, once registered.
        self.registered_model_version: int | None = None
        self._dirpath_given = self.dirpath is not None
        self._tracking_uri: str | None = None
        self._client: Any = None
        self._mlflow_logger: MLFlowLogger | None = None
        self._sync: ArtifactSync | None = None
        self._sample: torch.Tensor | None = None
        self._logged_model_id: str | None = None
        self._is_global_zero = True
        self._warned_no_run = False

    def get_last_model_uri(self) -> str | None:
        """The URI of the last model logged (``models:/<model id>``), or ``None`` (SDK name)."""
        return self.logged_model_uri

    # -- set-up -------------------------------------------------------------------------------

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._is_global_zero = trainer.is_global_zero
        self._mlflow_logger = next(
            (logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)), None
        )
        run_id, tracking_uri = self._find_run()
        if run_id is None:
            if self.model_name is not None:
                raise MisconfigurationException(
                    f"MLflowModelCheckpoint(model_name={self.model_name!r}) has no MLflow run to "
                    "log the model into: add lightning.pytorch.loggers.MLFlowLogger to the "
                    "Trainer's loggers, or call mlflow.start_run() before the Trainer runs."
                )
            if not self._warned_no_run and trainer.is_global_zero:
                self._warned_no_run = True
                rank_zero_warn(
                    "MLflowModelCheckpoint found no MLflow run (no MLFlowLogger among the "
                    "Trainer's loggers and no active run): checkpoints are saved locally only."
                )
            return
        if trainer.is_global_zero and (run_id != self.run_id or self._sync is None):
            self._attach(run_id, tracking_uri)

    def _find_run(self) -> tuple[str | None, str | None]:
        import mlflow

        if self._mlflow_logger is not None:
            run_id = self._mlflow_logger.run_id
            return run_id, self._mlflow_logger.experiment.tracking_uri if run_id else None
        active = mlflow.active_run()
        if active is not None:
            return active.info.run_id, mlflow.get_tracking_uri()
        return None, None

    def _attach(self, run_id: str, tracking_uri: str | None) -> None:
        from mlflow import MlflowClient
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        if self._sync is not None:
            self._sync.close()
        self.run_id, self._tracking_uri = run_id, tracking_uri
        self._client = client = MlflowClient(tracking_uri)

        def repository() -> Any:
            artifact_uri = client.get_run(run_id).info.artifact_uri
            return get_artifact_repository(artifact_uri, tracking_uri=tracking_uri)

        self._sync = ArtifactSync(
            repository, self.artifact_dir, self._warn_unreachable, self._note_recovery
        )

    def _warn_unreachable(self, error: BaseException) -> None:
        rank_zero_warn(
            f"MLflowModelCheckpoint cannot log checkpoints to MLflow run {self.run_id} at "
            f"{self._tracking_uri} ({_short(error)}). Training goes on; the checkpoints stay in "
            f"{self.dirpath} and their upload is retried at each new checkpoint and at the end "
            "of the stage."
        )

    def _note_recovery(self) -> None:
        _logger.info("MLflow run %s reachable again; checkpoint uploads resumed", self.run_id)

    # -- the first real batch, for the signature -----------------------------------------------

    def _keep_sample(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keep a sample of the first batch with an input, whichever stage runs it first."""
        if self._sample is None:
            tensor = input_of(batch, self.input_from_batch)
            if tensor is not None:
                self._sample = signature_sample(tensor)

    # One hook for the four stages (Lightning's public batch-start hooks).
    on_train_batch_start = _keep_sample
    on_validation_batch_start = _keep_sample
    on_test_batch_start = _keep_sample
    on_predict_batch_start = _keep_sample

    # -- checkpoints in, checkpoints out -------------------------------------------------------

    @override
    def _checkpoint_file_written(self, trainer: pl.Trainer, filepath: str) -> None:
        name = self._artifact_name(filepath)
        self.model_names[name] = model_name_for(posixpath.basename(name))
        if self._sync is not None and trainer.is_global_zero:
            self._sync.upload(os.fspath(filepath), name)

    @override
    def _checkpoint_file_removed(self, trainer: pl.Trainer, filepath: str) -> None:
        if self._sync is not None and trainer.is_global_zero:
            self._sync.remove(self._artifact_name(filepath))

    def _artifact_name(self, filepath: str) -> str:
        """The checkpoint's path relative to ``dirpath``, with ``/`` separators."""
        path = os.fspath(filepath)
        if self.dirpath is not None:
            relative = os.path.relpath(path, os.fspath(self.dirpath))
            if not relative.startswith(os.pardir):
                return relative.replace(os.sep, "/")
        return os.path.basename(path)

    # -- stage ends ----------------------------------------------------------------------------

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._finish_stage(trainer, pl_module, "train")

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._finish_stage(trainer, pl_module, "val")

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish_stage(trainer, pl_module, "test")

    @override
    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish_stage(trainer, pl_module, "predict")

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        super().on_exception(trainer, pl_module, exception)
        if trainer.is_global_zero:
            self._drain_uploads()

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._sync is not None:
            self._sync.close()

    def _finish_stage(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero or self.run_id is None or trainer.fast_dev_run:
            return
        self._drain_uploads()
        if stage == self.register_model_on:
            self._log_best_model(trainer, pl_module)
        if stage == "test":
            self._attach_test_metrics(trainer)

    def _drain_uploads(self) -> None:
        if self._sync is None:
            return
        left = self._sync.drain()
        if left:
            rank_zero_warn(
                f"MLflowModelCheckpoint could not log {len(left)} checkpoint(s) to MLflow run "
                f"{self.run_id} ({_short(self._sync.last_error)}); they are kept on local disk "
                f"({', '.join(sorted(left.values()))}) and retried at the end of the next stage."
            )

    # -- the best model ------------------------------------------------------------------------

    def _best_checkpoint(self) -> str | None:
        for path in (self.best_model_path, self.last_model_path):
            if path and os.path.isfile(path):
                return os.fspath(path)
        return None

    def _log_best_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        best = self._best_checkpoint()
        name = self._artifact_name(best) if best else None
        try:
            with weights_of(pl_module, best) as step:
                key = f"{name}@{step if step is not None else trainer.global_step}"
                if self._already_logged(key):
                    return
                tags = {CHECKPOINT_KEY_TAG: key}
                if name is not None:
                    tags[CHECKPOINT_TAG] = name
                score = self.best_k_models.get(best) if best else None
                if score is not None:
                    tags[CHECKPOINT_SCORE_TAG] = str(float(score))
                info = log_lightning_model(
                    pl_module,
                    run_id=self.run_id,  # type: ignore[arg-type]
                    name=model_name_for(posixpath.basename(name)) if name else "model",
                    registered_model_name=self.model_name,
                    signature=self._signature(pl_module),
                    tags=tags,
                    model_code=self.model_code,
                    code_paths=self.code_paths,
                    extra_pip_requirements=self.extra_pip_requirements,
                    metadata=self.additional_metadata,
                )
        except Exception as error:
            rank_zero_warn(
                f"MLflowModelCheckpoint could not log the best model ({best or 'current weights'}) "
                f"to MLflow run {self.run_id}: {_short(error)}. The checkpoints stay on local "
                "disk; training results are not affected."
            )
            return
        self._logged_model_id = info.model_id
        self.logged_model_uri = info.model_uri
        if self.model_name is not None and info.registered_model_version is not None:
            self.registered_model_version = int(info.registered_model_version)
            for tag, value in tags.items():
                self._client.set_model_version_tag(
                    self.model_name, str(info.registered_model_version), tag, value
                )

    def _signature(self, pl_module: pl.LightningModule) -> Any:
        if self._sample is None:
            rank_zero_warn(
                "MLflowModelCheckpoint saw no tensor input in the batches, so the model is "
                "logged without a signature; pass input_from_batch= to pick the input out of "
                "a batch."
            )
            return None
        try:
            return infer_training_signature(pl_module, self._sample)
        except RuntimeError as error:
            rank_zero_warn(f"{error}. The model is logged without a signature.")
            return None

    def _already_logged(self, key: str) -> bool:
        """Whether this run already holds a model of this checkpoint (a resumed run)."""
        if self.model_name is not None:
            version = find_registered_version(self._client, self.model_name, self.run_id, key)
            if version is None:
                return False
            self.registered_model_version = int(version.version)
            # Search results carry the model only in `source` (models:/<model id>).
            self.logged_model_uri = version.source
            self._logged_model_id = version.model_id or version.source.split("/")[-1]
            _logger.info("%s is registered already as version %s", key, version.version)
            return True
        model_id = find_logged_model(self._client, self.run_id, key)
        if model_id is not None:
            self._logged_model_id, self.logged_model_uri = model_id, f"models:/{model_id}"
        return model_id is not None

    def _attach_test_metrics(self, trainer: pl.Trainer) -> None:
        values = {
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if not isinstance(value, torch.Tensor) or value.numel() == 1
        }
        if not values:
            return
        try:
            model_id = self._logged_model_id or find_logged_model(self._client, self.run_id)
            if model_id is not None:
                log_model_metrics(self._client, self.run_id, model_id, values, trainer.global_step)
        except Exception as error:
            rank_zero_warn(
                f"MLflowModelCheckpoint could not attach the test metrics to the logged model: "
                f"{_short(error)}."
            )

    # -- resuming ------------------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            mlflow_run_id=self.run_id,
            mlflow_tracking_uri=self._tracking_uri,
            mlflow_uploaded=self._sync.synced if self._sync is not None else {},
            mlflow_generation=self._sync.generation if self._sync is not None else 0,
            model_names=dict(self.model_names),
        )
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_run = state_dict.get("mlflow_run_id")
        if saved_run and self.run_id and saved_run != self.run_id and self._is_global_zero:
            self._continue_run(saved_run, state_dict)
        super().load_state_dict(state_dict)
        self.model_names.update(state_dict.get("model_names") or {})
        if saved_run and saved_run == self.run_id and self._sync is not None:
            self._sync.restore(
                dict(state_dict.get("mlflow_uploaded") or {}),
                int(state_dict.get("mlflow_generation") or 0),
            )

    def _continue_run(self, saved_run: str, state_dict: dict[str, Any]) -> None:
        """Log the resumed training into the checkpoint's run, not the logger's new one."""
        client = self._client
        try:
            previous = client.get_run(saved_run)
            fresh = client.get_run(self.run_id)
        except Exception as error:
            rank_zero_warn(
                f"MLflowModelCheckpoint could not reopen MLflow run {saved_run}, which the "
                f"checkpoint was logged to ({_short(error)}); this training logs to run "
                f"{self.run_id}."
            )
            return
        if fresh.data.metrics or fresh.data.params or self._mlflow_logger is None:
            rank_zero_warn(
                f"The checkpoint belongs to MLflow run {saved_run}, but this training logs to run "
                f"{self.run_id}, which holds data already; its checkpoints go to {self.run_id}."
            )
            return
        # The logger opened an empty run before the checkpoint was read; drop it and point
        # the logger at the run the checkpoint came from.
        client.delete_run(self.run_id)
        continue_logger_run(self._mlflow_logger, saved_run, previous.info.experiment_id)
        client.update_run(saved_run, status="RUNNING")
        self._attach(saved_run, self._tracking_uri)
        if not self._dirpath_given and state_dict.get("dirpath"):
            self.dirpath = state_dict["dirpath"]


def _short(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[: _ERROR_TEXT_LIMIT - 3] + "..."
