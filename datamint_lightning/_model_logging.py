"""Log the best checkpoint of a LightningModule as an MLflow model (datamint or pytorch flavor)."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule

from datamint_core import BaseDatamintModel

#: Tags that tie a logged model (and its registered version) to the checkpoint it came from.
CHECKPOINT_TAG = "datamint.checkpoint"
CHECKPOINT_KEY_TAG = "datamint.checkpoint_key"
CHECKPOINT_SCORE_TAG = "datamint.checkpoint_score"

#: Batch keys searched, in order, for the model input when a batch is a dict.
_INPUT_KEYS = ("image", "images", "input", "inputs", "x", "pixels")
#: Samples of the first batch kept to infer the signature.
_SIGNATURE_SAMPLES = 2


def model_name_for(checkpoint_name: str) -> str:
    """A form of a checkpoint's name that MLflow accepts as a logged model's name.

    MLflow rejects ``/ : . % " '`` in model names, so ``epoch=00-val_loss=0.78.ckpt`` becomes
    ``epoch_00-val_loss_0_78``.
    """
    stem = checkpoint_name.removesuffix(".ckpt")
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "checkpoint"


def find_datamint_model(pl_module: LightningModule) -> BaseDatamintModel | None:
    """The Datamint model the LightningModule is, or holds as an attribute (``None``: neither).

    Raises:
        ValueError: the module holds more than one Datamint model.
    """
    if isinstance(pl_module, BaseDatamintModel):
        return pl_module
    found = {k: v for k, v in vars(pl_module).items() if isinstance(v, BaseDatamintModel)}
    if len(found) > 1:
        raise ValueError(
            f"{type(pl_module).__name__} holds several Datamint models ({sorted(found)}); "
            "MLflowModelCheckpoint logs one: keep one as an attribute of the LightningModule."
        )
    return next(iter(found.values()), None)


def input_of(batch: Any, input_from_batch: Callable[[Any], Any] | None) -> torch.Tensor | None:
    """The model input in a batch: the batch itself, its first item, or a known dict key."""
    if input_from_batch is not None:
        found = input_from_batch(batch)
    elif isinstance(batch, (list, tuple)) and batch:
        found = batch[0]
    elif isinstance(batch, Mapping):
        found = next((batch[key] for key in _INPUT_KEYS if key in batch), None)
    else:
        found = batch
    return found if isinstance(found, torch.Tensor) else None


def signature_sample(tensor: torch.Tensor) -> torch.Tensor:
    """A small detached CPU copy of the first samples of a batch input."""
    return tensor[:_SIGNATURE_SAMPLES].detach().to("cpu", copy=True)


def infer_training_signature(pl_module: LightningModule, sample: torch.Tensor) -> Any:
    """Run the module's forward on ``sample`` and return MLflow's signature of it.

    Raises:
        RuntimeError: forward failed on the sample; the message says what it was given.
    """
    from mlflow.models import infer_signature

    was_training = pl_module.training
    pl_module.eval()
    try:
        with torch.no_grad():
            output = pl_module(sample.to(pl_module.device))
    except Exception as error:
        raise RuntimeError(
            f"{type(pl_module).__name__}.forward failed on the first batch's input (a "
            f"{sample.dtype} tensor of shape {tuple(sample.shape)}): "
            f"{type(error).__name__}: {error}"
        ) from error
    finally:
        pl_module.train(was_training)
    return infer_signature(sample.numpy(), _as_numpy(output))


def _as_numpy(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.detach().cpu().numpy()
    if isinstance(output, Mapping):
        return {k: _as_numpy(v) for k, v in output.items()}
    if isinstance(output, (list, tuple)) and len(output) == 1:
        return _as_numpy(output[0])
    return None


@contextlib.contextmanager
def weights_of(pl_module: LightningModule, checkpoint_path: str | None) -> Iterator[int | None]:
    """Put a checkpoint's weights in the module for the duration; yield its global step.

    The module's own weights are put back afterwards, so training state is untouched.
    """
    if not checkpoint_path:
        yield None
        return
    # A file this trainer wrote; it holds callback state besides tensors.
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    current = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
    pl_module.load_state_dict(checkpoint["state_dict"])
    try:
        yield checkpoint.get("global_step")
    finally:
        pl_module.load_state_dict(current)


def log_lightning_model(
    pl_module: LightningModule,
    *,
    run_id: str,
    name: str,
    registered_model_name: str | None,
    signature: Any,
    tags: dict[str, str],
    model_code: str | None = None,
    code_paths: list[str] | None = None,
    extra_pip_requirements: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """Log the module with the ``datamint`` flavor when it is (or wraps) a Datamint model.

    Otherwise with ``mlflow.pytorch`` (pickled, so a LightningModule loads back whole).
    With ``model_code``, the Datamint model is logged from that code file, with the trained
    weights (``weights_from``), so loading it unpickles nothing. ``code_paths``,
    ``extra_pip_requirements`` and ``metadata`` go to MLflow as in ``log_model``.

    Returns:
        MLflow's ``ModelInfo``.
    """
    datamint_model = find_datamint_model(pl_module)
    if datamint_model is not None:
        import datamint_core

        if signature:
            metadata = {**(metadata or {}), "training_signature": signature.to_dict()}
        return datamint_core.log_model(
            python_model=model_code or datamint_model,
            weights_from=datamint_model if model_code else None,
            name=name,
            registered_model_name=registered_model_name,
            metadata=metadata,
            code_paths=code_paths,
            extra_pip_requirements=extra_pip_requirements,
            run_id=run_id,
            tags=tags,
        )
    if model_code is not None:
        raise ValueError(
            f"model_code={model_code!r} builds a Datamint model, but "
            f"{type(pl_module).__name__} neither is nor holds one."
        )
    import lightning
    import mlflow.pytorch

    # Given, not inferred: MLflow infers requirements by loading the model in a subprocess.
    requirements = [
        *mlflow.pytorch.get_default_pip_requirements(),
        f"lightning=={lightning.__version__}",
        *(extra_pip_requirements or []),
    ]
    return mlflow.pytorch.log_model(
        pl_module,
        name=name,
        pip_requirements=requirements,
        code_paths=code_paths,
        metadata=metadata,
        registered_model_name=registered_model_name,
        signature=signature,
        serialization_format="pickle",
        run_id=run_id,
        tags=tags,
    )


# -- the models already logged from a run's checkpoints (found again by their tags) ---------


def find_logged_model(client: Any, run_id: str, key: str | None = None) -> str | None:
    """The id of the newest model logged from run ``run_id``'s checkpoints, or ``None``.

    Args:
        client: an ``MlflowClient`` on the run's tracking store.
        key: only a model of this checkpoint (its ``CHECKPOINT_KEY_TAG``, ``name@step``).
    """
    run = client.get_run(run_id)
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    ours = [m for m in models if CHECKPOINT_KEY_TAG in m.tags]
    if key is not None:
        ours = [m for m in ours if m.tags[CHECKPOINT_KEY_TAG] == key]
    ours.sort(key=lambda m: m.creation_timestamp)
    return ours[-1].model_id if ours else None


def find_registered_version(client: Any, model_name: str, run_id: str, key: str) -> Any:
    """The version of ``model_name`` registered from run ``run_id``'s checkpoint ``key``
    (its ``CHECKPOINT_KEY_TAG``), or ``None``."""
    versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    return next((v for v in versions if v.tags.get(CHECKPOINT_KEY_TAG) == key), None)


def log_model_metrics(
    client: Any, run_id: str, model_id: str, values: Mapping[str, float], step: int
) -> None:
    """Log ``values`` as metrics of run ``run_id`` attached to the logged model ``model_id``."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, step, model_id=model_id) for key, value in values.items()]
    client.log_batch(run_id, metrics=metrics)
