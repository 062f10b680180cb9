"""A small 3-D torch network for the clinical-size batch benchmark (importable by workers;
its own module, so an older checkout measured beside this one has no module of that name)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from datamint_core import BaseResource, SegmentationAnnotation, TaskType
from datamint_torch import DatamintModel, as_tensor


class SmallConv3d(nn.Module):
    """Two 3x3x3 convolutions at full resolution: a small 3-D network's cost per voxel."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv3d(1, width, 3, padding=1), nn.ReLU(), nn.Conv3d(width, 1, 3, padding=1)
        )

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.body(batch)


class Conv3dSegmenter(DatamintModel):
    """``predict_volume``: the network on the whole ``(1, 1, D, H, W)`` volume."""

    task_type = TaskType.VOLUME_SEGMENTATION

    def predict_volume(self, model_input: list[BaseResource], **kwargs: Any) -> list[list]:
        net = self.get_pytorch_model()
        results = []
        for resource in model_input:
            volume = as_tensor(resource, self.inference_device)[None, None] / 1000.0
            with torch.inference_mode():
                mask = (net(volume)[0, 0] > 0).cpu().numpy()
            results.append([SegmentationAnnotation("lesion", mask, scope="volume")])
        return results


class UNetPatchSegmenter(DatamintModel):
    """A 3-D network behind a patch handler: ``volume`` mode runs it over a sliding window."""

    task_type = TaskType.VOLUME_SEGMENTATION

    def predict_patch(self, patches: torch.Tensor) -> torch.Tensor:
        return self.torch_model(patches)
