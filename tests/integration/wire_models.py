"""Models for the tests of limits and faults, importable by server and batch processes."""

from __future__ import annotations

import time

from datamint_core import BaseDatamintModel, NumericAnnotation, TaskType


class SliceMeans(BaseDatamintModel):
    """One number per slice, its mean (volumes run slice by slice through the bridge).

    A slice whose mean is above 0.5 first burns ``burn_s`` seconds of CPU in this thread,
    so a test can keep a request busy as long as it likes.
    """

    task_type = TaskType.IMAGE_CLASSIFICATION

    def __init__(self, burn_s: float = 0.0) -> None:
        super().__init__()
        self.burn_s = burn_s

    def predict_slice(self, model_input, slice_index, axis="axial", **kwargs):
        output = []
        for volume in model_input:
            mean = float(volume.get_slice(slice_index, axis).pixels.mean())
            if mean > 0.5 and self.burn_s:
                started = time.thread_time()
                while time.thread_time() - started < self.burn_s:
                    sum(range(1000))
            output.append([NumericAnnotation("mean", mean)])
        return output
