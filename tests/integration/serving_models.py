"""Models for the serving tests, in an importable module so a server process can unpickle them."""

from __future__ import annotations

import time

import numpy as np

from datamint_core import (
    AnnotationSpec,
    AnnotationType,
    NumericAnnotation,
    PredictionMode,
    SegmentationAnnotation,
    errors,
    prediction_mode,
)
from tests.core.sample_models import ThresholdSegmenter


class ProbeSegmenter(ThresholdSegmenter):
    """A threshold segmenter the client can make fail or wait, that counts callers inside it.

    Params (image mode): ``fail`` raises a RuntimeError, ``own_value_error`` a ValueError of
    the model's own (a bug, not the client's fault), ``sleep_seconds`` waits first,
    ``report_calls`` adds how many calls ran so far, ``started_marker`` names a file to create
    once the call is inside the model,
    ``report_concurrency`` adds the most calls ever seen inside ``predict_image`` at once,
    ``drop_results`` returns no entry at all (breaking the one-list-per-input contract),
    ``raise_error`` raises the :mod:`datamint_core.errors` class of that name.
    """

    active_calls = 0
    max_active_calls = 0
    total_calls = 0

    def predict_image(
        self,
        model_input,
        fail=False,
        sleep_seconds=0.0,
        report_concurrency=False,
        drop_results=False,
        own_value_error=False,
        report_calls=False,
        started_marker=None,
        raise_error=None,
        **kwargs,
    ):
        if raise_error:
            raise getattr(errors, raise_error)(f"the probe model raised {raise_error}")
        cls = type(self)
        if started_marker:
            open(started_marker, "w").close()
        cls.total_calls += 1
        cls.active_calls += 1
        cls.max_active_calls = max(cls.max_active_calls, cls.active_calls)
        try:
            if fail:
                raise RuntimeError("the probe model was asked to fail")
            if own_value_error:
                raise ValueError("operands could not be broadcast together")
            time.sleep(float(sleep_seconds))
            result = super().predict_image(model_input)
        finally:
            cls.active_calls -= 1
        if drop_results:
            return []
        if report_calls:
            result = [[*entry, NumericAnnotation("calls", float(cls.total_calls))]
                      for entry in result]
        if report_concurrency:
            result = [
                [*entry, NumericAnnotation("max_concurrent_calls", float(cls.max_active_calls))]
                for entry in result
            ]
        return result


class FragileSegmenter(ThresholdSegmenter):
    """Fails, naming a server-side file, on an image brighter than 0.99 anywhere."""

    def predict_image(self, model_input, **kwargs):
        if any(float(r.pixels.max()) > 0.99 for r in model_input):
            raise RuntimeError("cannot open /srv/secret/models/weights.bin for a bright image")
        return super().predict_image(model_input)


class ChannelThresholdSegmenter(ThresholdSegmenter):
    """A threshold segmenter that also takes (H, W, C) images: their channel mean."""

    def predict_image(self, model_input, **kwargs):
        masks = []
        for resource in model_input:
            pixels = resource.pixels
            if pixels.ndim == 3:
                with np.errstate(invalid="ignore"):
                    pixels = pixels.mean(axis=-1)  # no channels: NaN, never bright
            masks.append(pixels > self.threshold)
        return [[SegmentationAnnotation("bright", mask, confidence=0.9)] for mask in masks]


#: Texts a hostile model or client may put in front of the viewer page: each would run
#: script (setting ``window.__pwned``) if the page ever inserted it as HTML.
HOSTILE_LABELS = (
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=2</script>",
)
HOSTILE_PARAM = "<img src=x onerror=window.__pwned=3>"


class HostileLabelSegmenter(ThresholdSegmenter):
    """Label names and a mode param name that are HTML with script in it."""

    annotation_specs = [
        AnnotationSpec(label, AnnotationType.SEGMENTATION) for label in HOSTILE_LABELS
    ]

    def predict_image(self, model_input, **kwargs):
        return [
            [
                SegmentationAnnotation(HOSTILE_LABELS[0], r.pixels > self.threshold),
                SegmentationAnnotation(HOSTILE_LABELS[1], r.pixels > 2 * self.threshold),
            ]
            for r in model_input
        ]

    @prediction_mode(PredictionMode.FRAME_RANGE, param_keys=(HOSTILE_PARAM,))
    def predict_frame_range(self, model_input, **kwargs):
        return [[] for _ in model_input]


class RaisingSegmenter(ThresholdSegmenter):
    """Raises the :mod:`datamint_core.errors` class that a resource's id names (a server whose
    params schema is fixed, as MLflow's is, passes the id through whatever the model)."""

    def predict_image(self, model_input, **kwargs):
        for resource in model_input:
            if isinstance(getattr(errors, str(resource.id), None), type):
                raise getattr(errors, resource.id)(f"the model raised {resource.id}")
        return super().predict_image(model_input)
