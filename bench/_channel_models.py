"""Models for the clinical-size benchmarks (importable by servers and batch workers)."""

from __future__ import annotations

from typing import Any

import numpy as np

from datamint_core import AnnotationScope, BaseDatamintModel, BaseResource, SegmentationAnnotation


class VolumeThreshold(BaseDatamintModel):
    """``predict_volume``: the voxels above 300 (bone in HU) as one volume mask."""

    def predict_volume(self, model_input: list[BaseResource], **kwargs: Any) -> list[list]:
        return [
            [
                SegmentationAnnotation(
                    "bone", np.asarray(r.pixels) > 300, scope=AnnotationScope.VOLUME
                )
            ]
            for r in model_input
        ]


def conv3d_segmenter() -> Any:
    """A small 3-D network (two 3x3x3 convolutions, 4 features) in a torch Datamint model."""
    from bench._clinical_torch import Conv3dSegmenter, SmallConv3d

    return Conv3dSegmenter(torch_model=SmallConv3d())
