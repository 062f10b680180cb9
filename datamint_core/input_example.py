"""The input example saved with every model that is given none, as the Datamint SDK does.

MLflow keeps it as ``input_example.json`` and ``serving_input_example.json``: the scoring
server's documentation and ``mlflow models predict`` can show it, ``log_model`` checks that
the model serves it, and MLflow no longer warns that a model was logged without one. It is a
small blank resource of the kind the model's modes take, with ``mode`` ``default``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from datamint_core.resources import ImageResource, VideoResource, VolumeResource

#: The side of the example's images, in pixels: small, so saving stays as fast as before.
EXAMPLE_SIDE = 16


def default_input_example(supported_modes: Sequence[str]) -> tuple[list[dict[str, Any]],
                                                                   dict[str, Any]]:
    """Return ``([resource dict], {"mode": "default"})`` for a model serving these modes.

    An image when the model serves ``image`` (or nothing more specific), else a volume
    (``volume`` or ``slice``), else a video (``frame``, ``all_frames``).
    """
    modes = set(supported_modes)
    blank = np.zeros((EXAMPLE_SIDE, EXAMPLE_SIDE), dtype=np.float32)
    if "image" in modes or not modes & {"volume", "slice", "frame", "all_frames"}:
        resource = ImageResource(blank, id="example")
    elif modes & {"volume", "slice"}:
        resource = VolumeResource(np.stack([blank] * 4), id="example")
    else:
        resource = VideoResource(np.stack([blank] * 2), id="example")
    return [resource.to_dict()], {"mode": "default"}
