"""``DatamintModel``: a Datamint model that holds torch modules.

Where the weights go:

- Every torch module the model holds (the attached ``torch_model``, module attributes, and
  modules inside list/tuple/dict attributes) is saved as a CPU state dict in its own file,
  ``artifacts/torch_weights/<slot>.pt``, written with ``torch.save`` and read back with
  ``torch.load(weights_only=True)``: loading the weights never unpickles code.
- A pickled model keeps only weightless copies of its modules (parameters on the ``meta``
  device), so ``python_model.pkl`` stays small whatever the network's size.
- A model saved from code rebuilds its modules by running its file, then loads the weights:
  no pickle anywhere on the load path.

On load, :meth:`DatamintModel.load_context` decides the device (model config >
``MLFLOW_DEFAULT_PREDICTION_DEVICE`` > CUDA > MPS > CPU; a device this machine lacks falls
back to the CPU with one warning), loads the weights onto it, and puts every module, linked
``mlflow.pytorch`` models included, in eval mode on that device.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from torch import nn

from datamint_core import BaseDatamintModel, ModelSettings
from datamint_core.linked_models import check_linked_uris
from datamint_core.version import __version__
from datamint_torch.device import resolve_device
from datamint_torch.sliding_window import TorchPatchArrays

#: Name under which an attached ``torch_model`` appears in :meth:`get_mlflow_torch_models`.
ATTACHED_MODEL_KEY = "torch_model"
PYTORCH_FLAVOR = "pytorch"
WEIGHTS_ARTIFACT = "datamint.torch_weights"


class DatamintModel(BaseDatamintModel):
    """A Datamint model whose work is done by torch modules.

    Example::

        class LesionSegmenter(DatamintModel):
            task_type = TaskType.VOLUME_SEGMENTATION

            def predict_image(self, model_input, **kwargs):
                net = self.get_pytorch_model()
                batch = torch.stack([as_tensor(r, self.inference_device) for r in model_input])
                masks = net(batch[:, None].float()).sigmoid()[:, 0] > 0.5
                return [[SegmentationAnnotation("lesion", m.cpu().numpy())] for m in masks]

        LesionSegmenter(torch_model=UNet())

    Args:
        settings: deployment settings (:class:`~datamint_core.ModelSettings` or a dict).
        mlflow_torch_models_uri: linked ``mlflow.pytorch`` models, ``{name: uri}``, loaded
            onto the inference device at load time.
        mlflow_models_uri: linked pyfunc models, as on the core model.
        torch_model: a module attached to the model; its own ``predict_*`` handlers (if any)
            join the model's, without replacing the model's own.

    Raises:
        TypeError: ``torch_model`` is not a ``torch.nn.Module``.
        MlflowException: a malformed linked URI, or a name used for two linked models.
    """

    def __init__(
        self,
        settings: ModelSettings | dict[str, Any] | None = None,
        mlflow_torch_models_uri: Mapping[str, str] | None = None,
        mlflow_models_uri: Mapping[str, str] | None = None,
        torch_model: nn.Module | None = None,
    ) -> None:
        super().__init__(settings, mlflow_models_uri)
        if torch_model is not None and not isinstance(torch_model, nn.Module):
            raise TypeError(
                f"torch_model must be a torch.nn.Module, got {type(torch_model).__name__}; "
                "wrap other callables in a module or keep them as plain attributes."
            )
        self.torch_model = torch_model
        self._mlflow_torch_models_uri = check_linked_uris(mlflow_torch_models_uri)
        shared = sorted(set(self._mlflow_torch_models_uri) & set(self._mlflow_models_uri))
        if shared:
            raise MlflowException(
                f"Linked model name(s) {shared} are given both as pyfunc and as pytorch models; "
                "use each name once.",
                INVALID_PARAMETER_VALUE,
            )

    torch_model: nn.Module | None = None
    _mlflow_torch_models_uri: Mapping[str, str] = {}

    @property
    def mlflow_torch_models_uri(self) -> dict[str, str]:
        """The linked pytorch models, as ``{name: uri}``."""
        return dict(self._mlflow_torch_models_uri)

    def get_pytorch_model(self) -> nn.Module | None:
        """The attached ``torch_model``, if any."""
        return self.torch_model

    def get_mlflow_torch_models(self) -> dict[str, nn.Module]:
        """Linked pytorch models by name, plus the attached module under ``torch_model``."""
        models = self._linked_models_of_flavor(PYTORCH_FLAVOR)
        if self.torch_model is not None:
            models[ATTACHED_MODEL_KEY] = self.torch_model
        return models

    def torch_modules(self) -> dict[str, nn.Module]:
        """Every module the model holds, by slot: ``encoder``, ``heads.0``, ``nets.seg``."""
        found: dict[str, nn.Module] = {}
        for name, value in vars(self).items():
            if name.startswith("_"):
                continue
            if isinstance(value, nn.Module):
                found[name] = value
            elif isinstance(value, (list, tuple)):
                found.update(
                    {f"{name}.{i}": v for i, v in enumerate(value) if isinstance(v, nn.Module)}
                )
            elif isinstance(value, dict):
                found.update(
                    {f"{name}.{k}": v for k, v in value.items() if isinstance(v, nn.Module)}
                )
        return found

    # -- loading ---------------------------------------------------------------------------

    def load_context(self, context: Any) -> None:
        """Decide the device, load linked models, then the weights; eval mode everywhere."""
        super().load_context(context)
        device = self.inference_device
        weights_dir = (getattr(context, "artifacts", None) or {}).get(WEIGHTS_ARTIFACT)
        for slot, module in self.torch_modules().items():
            _load_weights(module, slot, weights_dir, device)
            module.to(device).eval()
        for module in self._linked_models_of_flavor(PYTORCH_FLAVOR).values():
            _to_device_for_inference(module, device)

    # -- hooks of the core model -----------------------------------------------------------

    def _linked_uris(self) -> dict[str, tuple[str, str]]:
        uris = super()._linked_uris()
        uris.update({k: (u, PYTORCH_FLAVOR) for k, u in self._mlflow_torch_models_uri.items()})
        return uris

    def _linked_model_loaders(self) -> dict[str, Any]:
        return {PYTORCH_FLAVOR: _load_pytorch_on_device}

    def _checked_device(self, device: str) -> str:
        return resolve_device(device)

    def _inference_context(self) -> contextlib.AbstractContextManager[Any]:
        return torch.inference_mode()

    def _patch_arrays(self) -> TorchPatchArrays:
        return TorchPatchArrays(self.inference_device)

    def _build_router(self) -> Any:
        router = super()._build_router()
        if self.torch_model is not None:
            router.update_registry(self.torch_model, base_class=nn.Module)
        return router

    def _prepare_for_inference(self) -> None:
        """Eval mode for every module the model holds (BatchNorm, dropout: as once loaded)."""
        for module in self.torch_modules().values():
            module.eval()

    def _pip_requirements(self) -> list[str]:
        return [f"datamint[torch]=={__version__}", f"torch=={torch.__version__.split('+')[0]}"]

    def _save_artifacts(self, staging_dir: Path) -> dict[str, str]:
        modules = self.torch_modules()
        if not modules:
            return {}
        weights_dir = staging_dir / "torch_weights"
        weights_dir.mkdir(parents=True)
        for slot, module in modules.items():
            # On the CPU, so the artifact loads on machines without the saving GPU.
            state = {k: v.detach().to("cpu") for k, v in module.state_dict().items()}
            torch.save(state, weights_dir / f"{slot}.pt")
        return {WEIGHTS_ARTIFACT: os.fspath(weights_dir)}

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        # The weights travel in their own artifact; the pickle keeps weightless copies.
        return {name: _without_weights(value) for name, value in state.items()}


def _load_weights(module: nn.Module, slot: str, weights_dir: str | None, device: str) -> None:
    if weights_dir is None:
        if _has_meta_tensors(module):
            raise MlflowException(
                f"The weights of torch module {slot!r} are missing: the model directory has no "
                "artifacts/torch_weights; it is incomplete, save or download it again."
            )
        return  # a model built in this process, never saved
    path = Path(weights_dir, f"{slot}.pt")
    if not path.is_file():
        raise MlflowException(
            f"The weights of torch module {slot!r} are missing from the model directory "
            f"(expected {path}); it is incomplete, or the model's code now holds a module it "
            "did not hold when it was saved."
        )
    state = torch.load(path, map_location=device, weights_only=True)
    weightless = _has_meta_tensors(module)
    tied = _tied_names(module) if weightless else []
    try:
        # assign=True puts the loaded tensors in place of the weightless (meta) ones.
        module.load_state_dict(state, strict=True, assign=weightless)
    except RuntimeError as error:
        raise MlflowException(
            f"The saved weights of torch module {slot!r} do not fit it: {error}. Was the "
            "model's code changed since it was saved?"
        ) from None
    for first, *others in tied:  # assigning gave tied weights one tensor each; tie them again
        shared = module.get_parameter(first)
        for name in others:
            owner, _, attribute = name.rpartition(".")
            setattr(module.get_submodule(owner), attribute, shared)


def _tied_names(module: nn.Module) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for name, parameter in module.named_parameters(remove_duplicate=False):
        groups.setdefault(id(parameter), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _load_pytorch_on_device(path: Path, device: str | None) -> nn.Module:
    import mlflow.pytorch

    module = mlflow.pytorch.load_model(os.fspath(path), map_location=device or "cpu")
    return _to_device_for_inference(module, device or "cpu")


def _to_device_for_inference(module: nn.Module, device: str) -> nn.Module:
    try:
        module.to(device).eval()
    except NotImplementedError:
        # A torch.export program (MLflow's default 'pt2' format) is an inference graph
        # already placed by map_location; it refuses .to() and .eval().
        pass
    return module


def _has_meta_tensors(module: nn.Module) -> bool:
    return any(t.is_meta for t in itertools.chain(module.parameters(), module.buffers()))


def _without_weights(value: Any) -> Any:
    if isinstance(value, nn.Module):
        return _meta_copy(value)
    if isinstance(value, (list, tuple)) and any(isinstance(v, nn.Module) for v in value):
        return type(value)(_without_weights(v) for v in value)
    if isinstance(value, dict) and any(isinstance(v, nn.Module) for v in value.values()):
        return {k: _without_weights(v) for k, v in value.items()}
    return value


def _meta_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters and buffers hold no data (``meta`` device).

    Pre-filling deepcopy's memo with meta tensors copies the structure without ever
    copying the weights.
    """
    memo: dict[int, Any] = {}
    # Only what the state dict saves is emptied: non-persistent buffers keep their values,
    # since no weights file will bring them back.
    for tensor in module.state_dict(keep_vars=True).values():
        if id(tensor) in memo:
            continue  # tied weights appear twice
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = (
            nn.Parameter(meta, requires_grad=tensor.requires_grad)
            if isinstance(tensor, nn.Parameter)
            else meta
        )
    return copy.deepcopy(module, memo)
