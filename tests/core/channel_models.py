"""A 4-channel 3-D "network" in numpy and the multi-modal cases the channel tests read.

Importable (not a test file) so that batch workers and servers can unpickle the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamint_core import (
    AnnotationScope,
    AnnotationSpec,
    AnnotationType,
    BaseDatamintModel,
    InvalidRequestError,
    NumericAnnotation,
    SegmentationAnnotation,
    TaskType,
)

#: The channels of a BraTS-style case, in the order the model was trained on.
MODALITIES = ("t1", "t1c", "t2", "flair")
#: One weight per channel, all different, so that a swapped channel changes the answer.
WEIGHTS = np.array([0.9, -0.4, 0.6, 1.3])


class FourChannelSegmenter(BaseDatamintModel):
    """``predict_volume`` on ``(D, H, W, 4)``: a 3x3x3 box filter of the channels' weighted
    sum, thresholded (``lesion``), and the summed score (a number), as a 3-D network would."""

    task_type = TaskType.VOLUME_SEGMENTATION
    annotation_specs = [
        AnnotationSpec("lesion", AnnotationType.SEGMENTATION),
        AnnotationSpec("score", AnnotationType.NUMERIC),
    ]

    def __init__(self, threshold: float = 150.0) -> None:
        super().__init__()
        self.threshold = threshold

    def predict_volume(self, model_input, **kwargs):
        results = []
        for volume in model_input:
            pixels = volume.pixels
            if pixels.ndim != 4 or pixels.shape[-1] != len(WEIGHTS):
                raise InvalidRequestError(
                    f"this model takes (D, H, W, {len(WEIGHTS)}) volumes ({', '.join(MODALITIES)}"
                    f"); got shape {pixels.shape}"
                )
            mixed = np.tensordot(pixels.astype(np.float64), WEIGHTS, axes=([3], [0]))
            padded = np.pad(mixed, 1, mode="edge")
            depth, height, width = mixed.shape
            smooth = (
                sum(
                    padded[z : z + depth, y : y + height, x : x + width]
                    for z in range(3)
                    for y in range(3)
                    for x in range(3)
                )
                / 27.0
            )
            results.append(
                [
                    SegmentationAnnotation(
                        "lesion",
                        smooth > self.threshold,
                        scope=AnnotationScope.VOLUME,
                        affine=volume.affine,
                        spacing=volume.spacing,
                    ),
                    NumericAnnotation("score", round(float(smooth.sum()), 6)),
                ]
            )
        return results


def brain_case(depth: int = 10, size: int = 24, seed: int = 0) -> np.ndarray:
    """Four co-registered int16 channels ``(D, H, W, 4)``: a blob bright in some channels."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:depth, :size, :size]
    blob = ((z - depth / 2) / (depth / 3)) ** 2 + ((y - size / 2) ** 2 + (x - size / 3) ** 2) / (
        size / 4
    ) ** 2 <= 1
    channels = [
        rng.integers(0, 60, (depth, size, size)) + blob * level for level in (200, 80, 150, 260)
    ]
    return np.stack(channels, axis=-1).astype(np.int16)


#: The RAS affine of the cases' (D, H, W) grid: 2.5 mm slices of 0.9 x 0.8 mm pixels.
CASE_AFFINE = np.array(
    [[0.0, 0.0, -0.8, 90.0], [0.0, -0.9, 0.0, 100.0], [2.5, 0.0, 0.0, -40.0], [0, 0, 0, 1.0]]
)


def write_case(directory: Path, case: np.ndarray, affine: np.ndarray = CASE_AFFINE) -> dict:
    """Write ``case`` as one NIfTI per channel and as one 4-D NIfTI; return their paths:
    ``{"channels": {name: path}, "four_d": path}``."""
    import nibabel

    from datamint_core.io.geometry import dhw_to_nifti

    directory.mkdir(parents=True, exist_ok=True)
    nifti_affine = dhw_to_nifti(affine)
    paths = {}
    for index, name in enumerate(MODALITIES):
        path = directory / f"{name}.nii.gz"
        nibabel.save(nibabel.Nifti1Image(case[..., index].transpose(2, 1, 0), nifti_affine), path)
        paths[name] = str(path)
    four_d = directory / "case-4d.nii.gz"
    nibabel.save(nibabel.Nifti1Image(case.transpose(2, 1, 0, 3), nifti_affine), four_d)
    return {"channels": paths, "four_d": str(four_d)}
