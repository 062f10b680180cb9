"""datamint_torch: the ``[torch]`` extra.

- :class:`DatamintModel`: a Datamint model that holds torch modules (an attached
  ``torch_model``, module attributes, linked ``mlflow.pytorch`` models), saves their weights
  beside the python model as CPU state dicts, and moves them to the inference device on load.
- Hardware detection for :attr:`~datamint_core.BaseDatamintModel.inference_device`
  (CUDA, then Apple MPS, then CPU), registered with the core when this package is imported.

Importing it without torch fails at once with the command that installs it.
"""

from datamint_core._extras import missing_extra

try:
    import torch
except ImportError:
    raise missing_extra("datamint_torch needs PyTorch", "torch") from None

from datamint_core import _extensions
from datamint_torch.device import detect_device, resolve_device
from datamint_torch.model import ATTACHED_MODEL_KEY, DatamintModel
from datamint_torch.sliding_window import TorchPatchArrays
from datamint_torch.tensors import as_tensor

_extensions.register_device_detector(detect_device)
_extensions.register_thread_limiter(torch.set_num_threads)

__all__ = [
    "ATTACHED_MODEL_KEY",
    "DatamintModel",
    "TorchPatchArrays",
    "as_tensor",
    "detect_device",
    "resolve_device",
]
