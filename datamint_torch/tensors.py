"""numpy -> torch without copies where the dtype allows."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from datamint_core import BaseResource

# numpy dtypes torch cannot share memory with; they are converted (one copy).
_CONVERT = {np.dtype(np.uint16): np.int32, np.dtype(np.uint32): np.int64}


def as_tensor(
    data: BaseResource | np.ndarray,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Return the pixels of a resource (or an array) as a tensor on ``device``.

    On the CPU, with a dtype torch supports, the tensor shares memory with the array, even
    for a strided view such as a coronal slice of a volume. Read-only arrays (memory-mapped
    files, decoded payloads) are shared too: treat the tensor as read-only.
    """
    array = data.pixels if isinstance(data, BaseResource) else np.asarray(data)
    if array.dtype in _CONVERT:
        array = array.astype(_CONVERT[array.dtype])
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("="))
    if any(stride < 0 for stride in array.strides):
        array = np.ascontiguousarray(array)
    with warnings.catch_warnings():
        # torch warns about read-only memory; inference never writes to its input.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(array)
    if dtype is None and str(device) == "cpu":
        return tensor
    return tensor.to(device=device, dtype=dtype)
