"""Models the MLServer tests serve (importable by the server process: the repo is on its path)."""

from __future__ import annotations

import numpy as np

from datamint_core import BaseDatamintModel, InvalidRequestError, SegmentationAnnotation

_RNG = np.random.default_rng(7)
#: A small CNN's weights: 3x3 convolutions, 1 -> 8 channels, 8 -> 8 (x LAYERS), 8 -> 1.
LAYERS = 24
_FIRST = (_RNG.standard_normal((8, 1, 9)) / 3).astype(np.float32)
_HIDDEN = (_RNG.standard_normal((LAYERS, 8, 8, 9)) / 8.5).astype(np.float32)
_LAST = (_RNG.standard_normal((1, 8, 9)) / 8.5).astype(np.float32)


def _conv3x3(batch: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` -> ``(N, D, H, W)``: a same-padded 3x3 convolution, weights (D, C, 9)."""
    padded = np.pad(batch, ((0, 0), (0, 0), (1, 1), (1, 1)))
    height, width = batch.shape[2:]
    windows = np.stack(
        [padded[:, :, i : i + height, j : j + width] for i in range(3) for j in range(3)], axis=2
    )  # (N, C, 9, H, W)
    columns = windows.transpose(0, 3, 4, 1, 2).reshape(-1, weights.shape[1] * 9)
    out = columns @ weights.reshape(len(weights), -1).T  # (N*H*W, D)
    return out.reshape(len(batch), height, width, -1).transpose(0, 3, 1, 2)


def forward(batch: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` images -> ``(N, H, W)`` scores: the CNN, the whole batch at once."""
    hidden = np.maximum(_conv3x3(batch[:, None], _FIRST), 0)
    for weights in _HIDDEN:
        hidden = np.maximum(_conv3x3(hidden, weights), 0)
    return _conv3x3(hidden, _LAST)[:, 0]


class TinyCNN(BaseDatamintModel):
    """A small numpy CNN that segments ``positive`` pixels; refuses NaN pixels (422).

    Small images and many layers: its cost is mostly per call (array dispatch), as a small
    model's is on an accelerator, so a batch of 8 costs little more than one image.
    """

    def predict_image(self, model_input, **kwargs):
        for resource in model_input:
            if np.isnan(resource.pixels).any():
                raise InvalidRequestError(f"Resource {resource.id!r} holds NaN pixels.")
        groups: dict[tuple, list[int]] = {}
        for position, resource in enumerate(model_input):
            groups.setdefault(resource.pixels.shape, []).append(position)
        scores: list = [None] * len(model_input)
        for positions in groups.values():  # one forward pass per image size
            batch = np.stack([model_input[p].pixels for p in positions]).astype(np.float32)
            for position, score in zip(positions, forward(batch), strict=True):
                scores[position] = score
        return [[SegmentationAnnotation("positive", score > 0, confidence=0.5)] for score in scores]
