"""A small CNN segmenter, importable by the processes that load it back."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from datamint_core import (
    AnnotationSpec,
    AnnotationType,
    CategoryAnnotation,
    NumericAnnotation,
    SegmentationAnnotation,
    TaskType,
    prediction_mode,
)
from datamint_torch import DatamintModel, as_tensor


class TinyUNet(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.encode = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(batch))


class CnnSegmenter(DatamintModel):
    task_type = TaskType.VOLUME_SEGMENTATION
    annotation_specs = [AnnotationSpec("lesion", AnnotationType.SEGMENTATION)]

    def predict_image(self, model_input, **kwargs):
        net = self.get_pytorch_model()
        batch = torch.stack(
            [as_tensor(r, self.inference_device, torch.float32) for r in model_input]
        )[:, None]
        masks = (net(batch)[:, 0] > 0).cpu().numpy()
        return [[SegmentationAnnotation("lesion", mask)] for mask in masks]


class MeanScorer(DatamintModel):
    """The mean of the network's output per image: shows any change in the numbers."""

    def predict_image(self, model_input, **kwargs):
        net = self.get_pytorch_model()
        batch = torch.stack(
            [as_tensor(r, self.inference_device, torch.float32) for r in model_input]
        )[:, None]
        return [[NumericAnnotation("score", float(s))] for s in net(batch).mean(dim=(1, 2, 3))]


class NetWithHandlers(nn.Module):
    """A module that brings its own prediction handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def predict_default(self, model_input, **kwargs):
        return [[CategoryAnnotation("by", "module-default")] for _ in model_input]

    @prediction_mode("frame", param_keys=("frame_index",))
    def on_frame(self, model_input, *, frame_index):
        return [[CategoryAnnotation("by", f"module-frame-{frame_index}")] for _ in model_input]


class WrapperWithOwnDefault(DatamintModel):
    def predict_default(self, model_input, **kwargs):
        return [[CategoryAnnotation("by", "wrapper-default")] for _ in model_input]


def trained_segmenter(seed: int = 0) -> CnnSegmenter:
    """A segmenter whose weights differ from a fresh init (so a lost weight shows)."""
    torch.manual_seed(seed)
    net = TinyUNet()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
        net.encode[1].running_mean.fill_(0.1)
    return CnnSegmenter(torch_model=net.eval())


def phantom_slices(depth: int = 6, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.normal(0, 1, (depth, size, size)).astype(np.float32)
