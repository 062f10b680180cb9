"""The torch extra: loading a CNN model, and predict latency on a 512x512 image.

1. ``datamint_core.load_model`` of a ``DatamintModel`` holding a small CNN (weights in their
   own artifact, loaded with ``weights_only=True``) vs ``mlflow.pytorch.load_model`` of the
   same network saved with ``mlflow.pytorch.save_model`` (pickle format), 10 loads each.
2. ``model.predict([ImageResource(image)], params={"mode": "image"})`` vs calling the network
   directly on the same float32 tensor under ``torch.inference_mode()``, 30 calls each.

Targets: load <= 2x ``mlflow.pytorch.load_model`` (issue #10); predict latency <= 1.1x the
direct call (issue #4).

Run: ``.venv/full/bin/python bench/torch_cnn.py``
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

N_LOADS = 10
N_CALLS = 30


def main() -> None:
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    import mlflow.pytorch
    import torch
    from _common import Summary, print_header, print_ratio, print_table
    from _torch_models import CnnSegmenter, SmallUNet

    import datamint_core

    torch.set_num_threads(max(1, torch.get_num_threads()))
    print_header("torch extra: CNN load, and predict on a 512x512 image vs the network alone")
    work = Path(tempfile.mkdtemp(prefix="datamint-bench-torch-"))
    torch.manual_seed(0)
    net = SmallUNet().eval()
    model = CnnSegmenter(torch_model=net)
    datamint_core.save_model(model, work / "datamint")
    mlflow.pytorch.save_model(
        net, work / "pytorch", serialization_format="pickle", pip_requirements=["torch"]
    )

    loads: dict[str, list[float]] = {"ours": [], "anchor": []}
    for _ in range(N_LOADS):
        started = time.perf_counter()
        loaded = datamint_core.load_model(str(work / "datamint"))
        loads["ours"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        mlflow.pytorch.load_model(str(work / "pytorch"))
        loads["anchor"].append((time.perf_counter() - started) * 1000)
    print_table(
        [
            ("ours:   datamint_core.load_model", Summary.of(loads["ours"])),
            ("anchor: mlflow.pytorch.load_model", Summary.of(loads["anchor"])),
        ],
        unit="ms",
    )
    print_ratio("load, ours / mlflow.pytorch", loads["ours"], loads["anchor"], target=2.0)

    image = np.random.default_rng(0).normal(size=(512, 512)).astype(np.float32)
    resource = datamint_core.ImageResource(image)
    tensor = torch.from_numpy(image)[None, None]
    network = loaded.get_pytorch_model()
    for _ in range(3):  # warm-up: allocator, thread pool
        loaded.predict([resource], params={"mode": "image"})
        with torch.inference_mode():
            network(tensor)
    calls: dict[str, list[float]] = {"ours": [], "anchor": []}
    for _ in range(N_CALLS):
        started = time.perf_counter()
        loaded.predict([resource], params={"mode": "image"})
        calls["ours"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        with torch.inference_mode():
            network(tensor)
        calls["anchor"].append((time.perf_counter() - started) * 1000)
    print_table(
        [
            ("ours:   model.predict (image -> mask annotation)", Summary.of(calls["ours"])),
            ("anchor: network(tensor) in inference_mode", Summary.of(calls["anchor"])),
        ],
        unit="ms",
    )
    print_ratio("predict, ours / network alone", calls["ours"], calls["anchor"], target=1.1)


if __name__ == "__main__":
    main()
