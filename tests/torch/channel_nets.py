"""A 4-channel 3-D torch network and a model that reports its compute threads; importable
by the processes (batch workers, ``datamint predict``) that load them back."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from datamint_core import (
    AnnotationScope,
    AnnotationSpec,
    AnnotationType,
    NumericAnnotation,
    SegmentationAnnotation,
    TaskType,
)
from datamint_torch import DatamintModel


class FourChannelConv3d(nn.Module):
    """Two 3-D convolutions from 4 channels (t1, t1c, t2, flair) to one lesion score."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.Sequential(
            nn.Conv3d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv3d(6, 1, 3, padding=1)
        )

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.layers(batch)


class FourChannelNetSegmenter(DatamintModel):
    """``predict_volume`` on ``(D, H, W, 4)``: the network on ``(1, 4, D, H, W)``."""

    task_type = TaskType.VOLUME_SEGMENTATION
    annotation_specs = [AnnotationSpec("lesion", AnnotationType.SEGMENTATION)]

    def predict_volume(self, model_input, **kwargs):
        net = self.get_pytorch_model()
        results = []
        for volume in model_input:
            planes = np.ascontiguousarray(volume.pixels.transpose(3, 0, 1, 2), np.float32)
            with torch.no_grad():
                scores = net(torch.from_numpy(planes / 100.0)[None].to(self.inference_device))
            mask = (scores[0, 0] > 0).cpu().numpy()
            results.append([SegmentationAnnotation("lesion", mask, scope=AnnotationScope.VOLUME)])
        return results


class ThreadReporter(DatamintModel):
    """Answers how many threads torch and OpenMP may use in the process that predicts."""

    def predict_default(self, model_input, **kwargs):
        return [
            [
                NumericAnnotation("torch_threads", float(torch.get_num_threads())),
                NumericAnnotation("omp_threads", float(os.environ.get("OMP_NUM_THREADS", 0))),
            ]
            for _ in model_input
        ]
