"""An interactive segmenter that needs no weights: region growing seeded by the prompts.

Each positive click (or positive scribble stroke) grows the region of connected pixels
whose intensity is within ``tolerance`` (a fraction of the image's intensity range) of the
seed's; a box grows from its centre and stays inside the box; a negative click or stroke
grows the same way and removes what it touches. ``scipy.ndimage`` does the connected
components (``pip install 'datamint[interactive]'``).

It implements only ``predict_image``: its ``prompts`` parameter declares it interactive
(points, boxes and scribbles), and the router serves ``slice`` and ``volume`` through it,
each slice getting its own prompts in its own 2-D coordinates.

Save it from code, as MLflow models from code are saved::

    datamint_core.save_model("interactive", python_model="examples/interactive_model.py")
"""

import mlflow
import numpy as np

from datamint_core import (
    AnnotationSpec,
    AnnotationType,
    BaseDatamintModel,
    SegmentationAnnotation,
    TaskType,
)


class RegionGrower(BaseDatamintModel):
    """Grows each label's region from its prompts (see the module)."""

    task_type = TaskType.IMAGE_SEGMENTATION
    annotation_specs = [
        AnnotationSpec("lesion", AnnotationType.SEGMENTATION, description="grown from prompts")
    ]
    #: How far from the seed's intensity a pixel may be, as a fraction of the image's range.
    tolerance = 0.2

    def predict_image(self, model_input, prompts=None, **kwargs):
        prompts = prompts or [None] * len(model_input)
        return [
            self._segment(resource.pixels, resource_prompts)
            for resource, resource_prompts in zip(model_input, prompts, strict=True)
        ]

    def _segment(self, pixels, prompts):
        if prompts is None:
            return []
        image = np.asarray(pixels, dtype=np.float64)
        if image.ndim == 3:  # channels last
            image = image.mean(axis=-1)
        tolerance = self.tolerance * max(float(np.ptp(image)), 1e-12)
        annotations = []
        for entry in prompts.labels:
            mask = np.zeros(image.shape, dtype=bool)
            for box in entry.boxes:
                inside = np.zeros(image.shape, dtype=bool)
                inside[box.voxels()] = True
                centre = tuple(round((s + e) / 2) for s, e in zip(box.start, box.end, strict=True))
                mask |= _grow(image, [centre], tolerance, inside)
            for positive in (True, False):
                seeds = [p.voxel() for p in entry.points if p.positive is positive]
                for scribble in entry.scribbles:
                    if scribble.positive is positive:
                        seeds += [tuple(i) for i in np.argwhere(scribble.mask(image.shape))]
                if not seeds:
                    continue
                grown = _grow(image, seeds, tolerance)
                mask = mask | grown if positive else mask & ~grown
            if mask.any():
                annotations.append(SegmentationAnnotation(entry.label, mask))
        return annotations


def _grow(image, seeds, tolerance, within=None):
    """The pixels connected to any seed through pixels within ``tolerance`` of that seed."""
    try:
        from scipy import ndimage
    except ImportError:
        raise ImportError(
            "The region-growing example needs scipy: pip install 'datamint[interactive]'"
        ) from None
    grown = np.zeros(image.shape, dtype=bool)
    for seed in seeds:
        if grown[seed]:
            continue  # already inside a region grown from a seed like it
        similar = np.abs(image - image[seed]) <= tolerance
        if within is not None:
            similar &= within
        components, _ = ndimage.label(similar)
        grown |= components == components[seed]
    return grown


mlflow.models.set_model(RegionGrower())
