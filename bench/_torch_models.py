"""The CNN for the torch benchmarks, importable so that a saved model can be loaded again."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from datamint_core import BaseResource, SegmentationAnnotation, TaskType
from datamint_torch import DatamintModel, as_tensor


class SmallUNet(nn.Module):
    """Four 3x3 convolutions at full resolution: a few ms per 512x512 image on a CPU."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.body(batch)


class CnnSegmenter(DatamintModel):
    task_type = TaskType.IMAGE_SEGMENTATION

    def predict_image(self, model_input: list[BaseResource], **kwargs: Any) -> list[list]:
        net = self.get_pytorch_model()
        batch = torch.stack([as_tensor(r, self.inference_device) for r in model_input])[:, None]
        masks = (net(batch)[:, 0] > 0).cpu().numpy()
        return [[SegmentationAnnotation("lesion", mask)] for mask in masks]


class UNetPatchSegmenter(DatamintModel):
    """A 3-D network behind a patch handler: ``volume`` mode runs it over a sliding window."""

    task_type = TaskType.VOLUME_SEGMENTATION

    def predict_patch(self, patches: torch.Tensor) -> torch.Tensor:
        return self.torch_model(patches)
