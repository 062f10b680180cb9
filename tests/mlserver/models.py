"""Models the MLServer tests serve (importable by the server process: the repo is on its path)."""

from __future__ import annotations

import numpy as np

from datamint_core import BaseDatamintModel, SegmentationAnnotation
from datamint_core.routing import InvalidRequestError

_RNG = np.random.default_rng(7)
#: A small CNN's weights: two 3x3 convolutions (1 -> 8 -> 1 channels), fixed.
_W1 = _RNG.standard_normal((8, 3, 3)).astype(np.float32)
_W2 = _RNG.standard_normal((8,)).astype(np.float32)


def _conv3x3(batch: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` -> ``(N, C, H, W)``: a same-padded 3x3 convolution, one channel in."""
    padded = np.pad(batch, ((0, 0), (1, 1), (1, 1)))
    height, width = batch.shape[1:]
    windows = np.stack(
        [padded[:, i : i + height, j : j + width] for i in range(3) for j in range(3)], axis=1
    )  # (N, 9, H, W)
    return np.einsum("nkhw,ck->nchw", windows, weights.reshape(len(weights), 9))


class TinyCNN(BaseDatamintModel):
    """A two-layer CNN in numpy that segments ``positive`` pixels; refuses NaN pixels.

    Its cost is mostly per call (Python and numpy dispatch), as a small model's is on an
    accelerator, so a batch of 8 costs little more than one input.
    """

    def predict_image(self, model_input, **kwargs):
        for resource in model_input:
            if np.isnan(resource.pixels).any():
                raise InvalidRequestError(f"Resource {resource.id!r} holds NaN pixels.")
        shapes = {resource.pixels.shape for resource in model_input}
        if len(shapes) == 1:
            batch = np.stack([resource.pixels for resource in model_input]).astype(np.float32)
            scores = self._forward(batch)
        else:
            scores = [self._forward(r.pixels[None].astype(np.float32))[0] for r in model_input]
        return [[SegmentationAnnotation("positive", score > 0, confidence=0.5)] for score in scores]

    @staticmethod
    def _forward(batch: np.ndarray) -> np.ndarray:
        hidden = np.maximum(_conv3x3(batch, _W1), 0)  # (N, 8, H, W)
        for _ in range(6):  # a few more layers' worth of dispatch
            hidden = np.maximum(hidden - hidden.mean(axis=(2, 3), keepdims=True), 0)
        return np.einsum("nchw,c->nhw", hidden, _W2) - 0.1
