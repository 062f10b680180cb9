"""Sliding-window inference on the model's device: patches, blending and reduction in torch.

The core's :mod:`datamint_core.sliding_window` decides the tiling and the slabs; this
backend does the array work with torch tensors on the inference device. The volume goes to
the device once, in its own dtype (on the CPU, shared with the numpy array); each batch of
windows is cut there and handed to the patch handler as a float32 tensor ``(N, C, d, h, w)``;
only the finished slab's labels come back to the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from datamint_core.sliding_window import SlidingWindow, check_label_range, checked_patch_result
from datamint_torch.tensors import as_tensor


class TorchPatchArrays:
    """Sliding-window array work in torch, on ``device``.

    Args:
        device: where patches are cut, run, blended and reduced (the inference device).
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    def prepare(self, pixels: np.ndarray) -> torch.Tensor:
        return as_tensor(pixels, self.device)

    def patches(
        self, volume: torch.Tensor, corners: Sequence[tuple[int, int, int]],
        roi: tuple[int, int, int],
    ) -> torch.Tensor:
        blocks = torch.stack(
            [volume[d : d + roi[0], h : h + roi[1], w : w + roi[2]] for d, h, w in corners]
        )
        blocks = blocks.permute(0, 4, 1, 2, 3) if volume.ndim == 4 else blocks[:, None]
        return blocks.to(torch.float32, memory_format=torch.contiguous_format)

    def importance_map(self, window: SlidingWindow) -> torch.Tensor:
        # The same operations as MONAI's compute_importance_map, so that the weights (and
        # so the blended scores) are the same to the last bit.
        if window.blend_mode == "constant":
            return torch.ones(window.roi_size, dtype=torch.float32, device=self.device)
        weights = torch.ones((), dtype=torch.float32, device=self.device)
        axes = zip(window.roi_size, window.sigma_scale, strict=True)
        for axis, (size, scale) in enumerate(axes):
            x = torch.arange(
                start=-(size - 1) / 2.0, end=(size - 1) / 2.0 + 1, dtype=torch.float,
                device=self.device,
            )
            gaussian = torch.exp(x**2 / (-2 * (size * scale) ** 2))
            weights = weights.unsqueeze(-1) * gaussian[(None,) * axis] if axis else gaussian
        return torch.clamp_(weights, min=max(torch.min(weights).item(), 1e-3))

    def scores(self, result: Any, count: int, window: SlidingWindow) -> torch.Tensor:
        tensor = result if isinstance(result, torch.Tensor) else torch.as_tensor(result)
        kind_code = "b" if tensor.dtype == torch.bool else (
            "f" if tensor.is_floating_point() or tensor.is_complex() else "i"
        )
        kind = checked_patch_result(tuple(tensor.shape), kind_code, count, window)
        tensor = tensor.to(self.device)
        if kind == "labels":
            classes = len(window.class_names or ())
            check_label_range(int(tensor.min()), int(tensor.max()), window)
            one_hot = torch.nn.functional.one_hot(tensor.long(), classes)
            return one_hot.permute(0, 4, 1, 2, 3).to(torch.float32)
        return tensor.to(torch.float32)

    def zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float32, device=self.device)

    def argmax(self, scores: torch.Tensor, out: np.ndarray) -> None:
        dtype = torch.uint8 if out.dtype == np.uint8 else torch.int32
        out[...] = first_argmax(scores, dtype).cpu().numpy()

    def at_least(self, scores: torch.Tensor, threshold: float, out: np.ndarray) -> None:
        out[...] = (scores >= threshold).cpu().numpy()

    def to_numpy(self, array: torch.Tensor) -> np.ndarray:
        return array.detach().cpu().numpy()


def first_argmax(scores: torch.Tensor, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """``scores.argmax(dim=0)`` as ``dtype``, the same labels, one class at a time.

    torch reduces the leading axis of a ``(K, D, H, W)`` tensor several times slower than it
    compares two of its ``(D, H, W)`` planes; this takes ``K - 1`` passes of compare and fill
    (and maximum, but for the last class). Ties keep the first class, as ``argmax`` does;
    scores holding a NaN (which ``argmax`` takes for the largest) go to ``argmax`` itself
    (a sum that is NaN says so; one made NaN by +inf and -inf only costs the slower path).
    """
    classes = scores.shape[0]
    if classes == 1 or bool(torch.isnan(scores.sum())):
        return scores.argmax(dim=0).to(dtype)
    labels = torch.zeros(scores.shape[1:], dtype=dtype, device=scores.device)
    better = torch.empty(scores.shape[1:], dtype=torch.bool, device=scores.device)
    best = scores[0]
    for index in range(1, classes):
        torch.gt(scores[index], best, out=better)
        labels.masked_fill_(better, index)
        if index + 1 < classes:
            best = torch.maximum(best, scores[index])
    return labels
